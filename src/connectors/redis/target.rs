use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::config::RedisOptions;
use crate::config::Job;
use crate::connectors::{ConnectorError, Target, WriteBatch, Written};
use crate::model::Envelope;

/// Adds each item unless its id was added within the window: the marker
/// key and the entry are written together, so a resent item is skipped.
/// KEYS[1]: the stream. ARGV: marker prefix, window (s), maxlen (0: none),
/// then id, op, envelope per item. Returns how many were added.
const ADD_ONCE: &str = r#"
local added = 0
for i = 4, #ARGV, 3 do
  if redis.call('SET', ARGV[1] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) then
    if ARGV[3] ~= '0' then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[i], 'op', ARGV[i + 1], 'envelope', ARGV[i + 2])
    else
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'op', ARGV[i + 1], 'envelope', ARGV[i + 2])
    end
    added = added + 1
  end
end
return added
"#;

pub struct RedisTarget {
    url: String,
    system: String,
    stream: String,
    options: RedisOptions,
    job: String,
    children: Vec<String>,
    ignore_deletes: bool,
    script: redis::Script,
    /// Connected at the first write.
    connection: tokio::sync::OnceCell<MultiplexedConnection>,
}

impl RedisTarget {
    pub fn new(job: &Job) -> Result<RedisTarget, ConnectorError> {
        let url = job.target.url.clone().unwrap_or_default();
        let system = format!("redis {}", crate::redact::url(&url));
        let options = RedisOptions::parse(&job.target.options)
            .map_err(|p| ConnectorError::failed(&system, "options", p.message))?;
        let table = job.source.table.as_deref().unwrap_or_default();
        let short = table.rsplit_once('.').map_or(table, |(_, t)| t);
        Ok(RedisTarget {
            stream: options
                .stream
                .replace("{job}", &job.name)
                .replace("{table}", short),
            url,
            system,
            options,
            job: job.name.clone(),
            children: job.children.keys().cloned().collect(),
            ignore_deletes: crate::rules::keeps_deleted_rows(job),
            script: redis::Script::new(ADD_ONCE),
            connection: tokio::sync::OnceCell::new(),
        })
    }

    fn error(&self, e: redis::RedisError) -> ConnectorError {
        let detail = crate::redact::text(&e.to_string());
        let system = self.system.clone();
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            || detail.contains("NOAUTH")
            || detail.contains("WRONGPASS")
        {
            ConnectorError::Refused { system, detail }
        } else if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            ConnectorError::Unreachable { system, detail }
        } else if detail.contains("WRONGTYPE") {
            ConnectorError::MissingObject {
                system,
                object: format!("stream `{}`", self.stream),
                detail: format!("the key holds another type than a stream: {detail}"),
            }
        } else {
            ConnectorError::Transient {
                system,
                object: format!("stream `{}`", self.stream),
                detail,
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, ConnectorError> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str()).map_err(|e| self.error(e))?;
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| self.error(e))
            })
            .await?;
        Ok(connection.clone())
    }
}

#[async_trait]
impl Target for RedisTarget {
    fn describe(&self) -> String {
        format!("{} stream `{}`", self.system, self.stream)
    }

    async fn write(&self, batch: &WriteBatch<'_>) -> Result<Written, ConnectorError> {
        let pairs = batch.changes(!self.ignore_deletes);
        if pairs.is_empty() {
            return Ok(Written::default());
        }
        let mut invocation = self.script.key(&self.stream);
        invocation
            .arg(format!("ferry:sent:{}:", self.stream))
            .arg(self.options.window().as_secs())
            .arg(self.options.maxlen.unwrap_or(0));
        for (record, item) in &pairs {
            let envelope =
                serde_json::to_string(&Envelope::new(&self.job, item, record, &self.children))
                    .map_err(|e| ConnectorError::failed(&self.system, &self.stream, e))?;
            invocation
                .arg(format!("{}-{}", self.job, item.version))
                .arg(item.op.as_str())
                .arg(envelope);
        }
        let mut connection = self.connection().await?;
        let _added: u64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Written::default())
    }
}
