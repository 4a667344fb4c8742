//! Whether a system's server answers at all, asked before a run talks to it:
//! a connection pool that meets a refused connection retries until its
//! acquire timeout and then says only "pool timed out". A plain TCP connect
//! tells at once that nothing listens (`connection refused: HOST:PORT`), or
//! that nothing answered within the connect timeout.
use std::time::Duration;

/// How long connecting may take when the configuration does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// [`probe`] of a job's system of `kind` at `url` (none: nothing to ask),
/// as the connector error a run reports.
pub async fn system(
    kind: &str,
    url: &Option<String>,
    role: &str,
    timeout: Duration,
) -> Result<(), crate::connectors::ConnectorError> {
    let Some(url) = url else { return Ok(()) };
    probe(url, role, timeout).await.map_err(|detail| {
        crate::connectors::ConnectorError::Unreachable {
            system: format!("{kind} {}", crate::redact::url(url)),
            detail,
        }
    })
}

/// Connects to the host and port of `url` and hangs up. `role` (source,
/// target, state store) goes into the message. URLs without a network
/// address (files, SQLite, sockets) pass unasked.
pub async fn probe(url: &str, role: &str, timeout: Duration) -> Result<(), String> {
    let Some((host, port)) = address(url) else {
        return Ok(());
    };
    let timeout = if timeout.is_zero() {
        DEFAULT_CONNECT_TIMEOUT
    } else {
        timeout
    };
    let at = format!("{host}:{port}");
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("connection refused: {at} ({role})"))
        }
        Ok(Err(e)) => Err(format!("cannot connect to {at} ({role}): {e}")),
        Err(_) => Err(format!(
            "no answer from {at} within {} ({role}; `connect_timeout`)",
            humantime::format_duration(timeout)
        )),
    }
}

/// The host and port a URL connects to, the scheme's port when none is given.
fn address(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let default_port = match parsed.scheme() {
        "postgres" | "postgresql" => 5432,
        "mysql" | "mariadb" => 3306,
        "amqp" => 5672,
        "amqps" => 5671,
        "nats" => 4222,
        "redis" => 6379,
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = parsed.host_str().filter(|h| !h.is_empty())?;
    // `postgres://…?host=/run/postgresql` connects through a socket.
    if parsed
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'))
    {
        return None;
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((host, parsed.port().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_url_or_the_schemes_port() {
        assert_eq!(
            address("postgres://u:p@db.internal/shop"),
            Some(("db.internal".into(), 5432))
        );
        assert_eq!(
            address("mysql://root@127.0.0.1:3307/x"),
            Some(("127.0.0.1".into(), 3307))
        );
        assert_eq!(address("sqlite://state.db"), None);
        assert_eq!(address("postgres:///shop?host=/run/postgresql"), None);
        assert_eq!(address("nats://[::1]"), Some(("::1".into(), 4222)));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_refused_at_once() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let started = std::time::Instant::now();
        let err = probe(
            &format!("postgres://x@127.0.0.1:{port}/db"),
            "target",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            format!("connection refused: 127.0.0.1:{port} (target)")
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
