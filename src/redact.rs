//! Secrets never reach logs, errors or status: URLs are shown without passwords.

/// `url` with any password (and secret query parameter) replaced by `***`;
/// host, port, database and user stay visible, so that a wrong one can be
/// seen. Text that does not parse as a URL keeps everything but what stands
/// between the first `:` of its user part and its last `@`.
pub fn url(raw: &str) -> String {
    match url::Url::parse(raw) {
        // An opaque URL with an `@` may be `scheme:user:password@…` misparsed.
        Ok(u) if u.cannot_be_a_base() && raw.contains('@') => userinfo_masked(raw),
        Ok(mut u) => {
            if u.password().is_some() {
                // set_password only fails for URLs that cannot have one, and this one has one.
                let _ = u.set_password(Some("***"));
            }
            let mut query_redacted = false;
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    if is_secret_param(&k) {
                        query_redacted = true;
                        (k.into_owned(), "***".to_string())
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            if query_redacted {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => userinfo_masked(raw),
    }
}

/// `[scheme://]user:password@rest` with the password masked; text without
/// an `@` as it is.
fn userinfo_masked(raw: &str) -> String {
    let Some(at) = raw.rfind('@') else {
        return raw.to_string();
    };
    let start = raw.find("://").map_or(0, |i| i + 3).min(at);
    match raw[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &raw[..start + colon], &raw[at..]),
        // No user:password form: the whole user part may be a token.
        None if start < at => format!("{}***{}", &raw[..start], &raw[at..]),
        None => raw.to_string(),
    }
}

/// Free text (an error message) with the password of any URL in it
/// replaced by `***`: `amqp://user:pw@host` → `amqp://user:***@host`.
pub fn text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at_sign), Some(colon)) if colon < at_sign => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at_sign..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.contains("token") || n == "key"
}

#[cfg(test)]
mod text_tests {
    #[test]
    fn masks_passwords_of_urls_inside_text() {
        assert_eq!(
            super::text("cannot reach amqp://guest:pw@h:5672/%2f: refused"),
            "cannot reach amqp://guest:***@h:5672/%2f: refused"
        );
        assert_eq!(
            super::text("protocol error: AMQP hard error: CONNECTION-FORCED"),
            "protocol error: AMQP hard error: CONNECTION-FORCED"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hides_password_and_secret_params() {
        assert_eq!(
            super::url("postgres://app:hunter2@db:5432/shop?password=x&sslmode=require"),
            "postgres://app:***@db:5432/shop?password=***&sslmode=require"
        );
        assert_eq!(super::url("sqlite://state.db"), "sqlite://state.db");
        assert!(!super::url("weird:hunter2@@").contains("hunter2"));
    }

    #[test]
    fn keeps_what_is_not_secret_even_in_a_bad_url() {
        // Host, port, database and user stay visible.
        assert_eq!(
            super::url("postgres://nc@127.0.0.1:5432/nc_dst"),
            "postgres://nc@127.0.0.1:5432/nc_dst"
        );
        assert_eq!(super::url("x"), "x");
        // A password with characters a URL cannot hold: still masked.
        assert_eq!(
            super::url("postgres://nc:p@ss w/rd@127.0.0.1:5432/nc_dst"),
            "postgres://nc:***@127.0.0.1:5432/nc_dst"
        );
        assert_eq!(super::url("db.internal:5432/shop"), "db.internal:5432/shop");
    }
}
