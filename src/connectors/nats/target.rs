use async_trait::async_trait;

use super::{connect_error, system, unreachable};
use crate::config::registry::parse_options;
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::{key_text, Envelope, Op};

/// `[target] type = "nats"`: its own keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsOptions {
    /// Checked and kept by ferry as the target's `url`.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    /// The subject items are published on; may use `{job}` and `{op}`.
    subject: String,
    /// The JetStream stream that must store them (checked at the first
    /// write; each message expects it).
    stream: Option<String>,
}

pub struct NatsTarget {
    url: String,
    subject: String,
    job: String,
    system: String,
    children: Vec<String>,
    ignore_deletes: bool,
    /// The stream that must store the messages, when the job names one.
    stream: Option<String>,
    /// Connected at the first write.
    jetstream: tokio::sync::OnceCell<async_nats::jetstream::Context>,
}

impl NatsTarget {
    pub fn new(job: &Job) -> Result<NatsTarget, ConnectorError> {
        let url = job.target.url.clone().unwrap_or_default();
        let system = system(&url);
        let options: NatsOptions = parse_options(&job.target.options)
            .map_err(|p| ConnectorError::failed(&system, "options", p.message))?;
        Ok(NatsTarget {
            system,
            url,
            subject: options.subject,
            job: job.name.clone(),
            children: job.children.keys().cloned().collect(),
            ignore_deletes: crate::rules::keeps_deleted_rows(job),
            stream: options.stream,
            jetstream: tokio::sync::OnceCell::new(),
        })
    }

    /// `[target] stream`: it must exist and take every subject this job
    /// publishes on, else nothing is sent.
    async fn check_stream(
        &self,
        jetstream: &async_nats::jetstream::Context,
    ) -> Result<(), ConnectorError> {
        let Some(name) = &self.stream else {
            return Ok(());
        };
        let object = format!("stream `{name}`");
        let mut stream =
            jetstream
                .get_stream(name)
                .await
                .map_err(|e| ConnectorError::MissingObject {
                    system: self.system.clone(),
                    object: object.clone(),
                    detail: e.to_string(),
                })?;
        let info = stream
            .info()
            .await
            .map_err(|e| unreachable(&self.system, e))?;
        let filters = &info.config.subjects;
        for op in [Op::Upsert, Op::Delete] {
            let subject = self.subject(op);
            if !filters.iter().any(|f| subject_matches(f, &subject)) {
                return Err(ConnectorError::MissingObject {
                    system: self.system.clone(),
                    object,
                    detail: format!(
                        "it does not take subject `{subject}` (its subjects: {})",
                        filters.join(", ")
                    ),
                });
            }
        }
        Ok(())
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
                let jetstream = async_nats::jetstream::new(client);
                self.check_stream(&jetstream).await?;
                Ok::<_, ConnectorError>(jetstream)
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
            if let Some(stream) = &self.stream {
                // The server refuses a message that would land in another stream.
                headers.insert("Nats-Expected-Stream", stream.as_str());
            }
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

/// Whether NATS subject `filter` (tokens, `*` for one, `>` for the rest)
/// takes `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subject_filters_match_as_nats_does() {
        assert!(subject_matches("ferry.>", "ferry.people.upsert"));
        assert!(subject_matches("ferry.*.upsert", "ferry.people.upsert"));
        assert!(!subject_matches("ferry.*", "ferry.people.upsert"));
        assert!(!subject_matches("ferry.>", "ferry"));
        assert!(subject_matches("ferry.people", "ferry.people"));
        assert!(!subject_matches("other.>", "ferry.people"));
    }
}
