use async_trait::async_trait;

use super::{connect_error, system, unreachable};
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::{key_text, Envelope, Op};

pub struct NatsTarget {
    url: String,
    subject: String,
    job: String,
    system: String,
    children: Vec<String>,
    ignore_deletes: bool,
    /// Connected at the first write.
    jetstream: tokio::sync::OnceCell<async_nats::jetstream::Context>,
}

impl NatsTarget {
    pub fn new(job: &Job) -> NatsTarget {
        let url = job.target.url.clone().unwrap_or_default();
        NatsTarget {
            system: system(&url),
            url,
            subject: job.target.subject.clone().unwrap_or_default(),
            job: job.name.clone(),
            children: job.children.keys().cloned().collect(),
            ignore_deletes: job.rules.deletes == crate::config::Deletes::Ignore,
            jetstream: tokio::sync::OnceCell::new(),
        }
    }

    fn subject(&self, op: Op) -> String {
        self.subject
            .replace("{job}", &self.job)
            .replace("{op}", op.as_str())
    }
}

#[async_trait]
impl Target for NatsTarget {
    fn describe(&self) -> String {
        format!("{} subject `{}`", self.system, self.subject)
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        let pairs = batch.changes(!self.ignore_deletes);
        if pairs.is_empty() {
            return Ok(Written::default());
        }
        let jetstream = self
            .jetstream
            .get_or_try_init(|| async {
                let client = async_nats::connect(&self.url)
                    .await
                    .map_err(|e| connect_error(&self.system, e))?;
                Ok::<_, ConnectorError>(async_nats::jetstream::new(client))
            })
            .await?;
        // Publish everything, then wait for every acknowledgement.
        let mut acks = Vec::with_capacity(pairs.len());
        for (record, item) in &pairs {
            let payload =
                serde_json::to_vec(&Envelope::new(&self.job, item, record, &self.children))
                    .map_err(|e| ConnectorError::failed(&self.system, &self.subject, e))?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}-{}", self.job, item.version).as_str(),
            );
            headers.insert("ferry-job", self.job.as_str());
            headers.insert("ferry-key", key_text(&item.key).as_str());
            headers.insert("ferry-op", item.op.as_str());
            headers.insert("ferry-hash", item.hash.as_str());
            let ack = jetstream
                .publish_with_headers(self.subject(item.op), headers, payload.into())
                .await
                .map_err(|e| unreachable(&self.system, e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                let detail = e.to_string();
                if detail.contains("no responders") || detail.contains("stream not found") {
                    ConnectorError::MissingObject {
                        system: self.system.clone(),
                        object: format!("subject `{}`", self.subject),
                        detail: format!("no stream takes this subject: {detail}"),
                    }
                } else {
                    unreachable(&self.system, e)
                }
            })?;
        }
        Ok(Written::default())
    }
}
