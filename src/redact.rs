//! Secrets never reach logs, errors or status: URLs are shown without passwords.

/// `url` with any password replaced by `***`; text that is not a URL is kept
/// only up to its scheme, since it may hold a secret in a form we cannot parse.
pub fn url(raw: &str) -> String {
    match url::Url::parse(raw) {
        // An opaque URL with an `@` may be `scheme:user:password@…` misparsed.
        Ok(u) if u.cannot_be_a_base() && raw.contains('@') => format!("{}:***", u.scheme()),
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
        Err(_) => match raw.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:***"),
            None => "***".to_string(),
        },
    }
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.contains("token") || n == "key"
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
}
