//! `${VAR}` and `${VAR:-default}` in string values.

#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// The variable is unset and has no default.
    Unset(String),
    /// `${` without a closing `}` or with an invalid name.
    Malformed(String),
}

impl std::fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolateError::Unset(v) => write!(
                f,
                "environment variable `{v}` is not set (give a default with `${{{v}:-default}}`)"
            ),
            InterpolateError::Malformed(s) => write!(f, "malformed interpolation `{s}`"),
        }
    }
}

/// Replaces every `${VAR}` / `${VAR:-default}` using `lookup`; `$$` is a literal `$`.
pub fn interpolate(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    interpolate_or_keep(input, lookup, false)
}

/// As [`interpolate`]; with `keep_unset`, a variable that is unset and has
/// no default stays as `${VAR}` instead of being an error (for commands
/// that never contact the systems the value points at).
pub fn interpolate_or_keep(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
    keep_unset: bool,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| InterpolateError::Malformed(format!("${{{body}")))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpolateError::Malformed(format!("${{{expr}}}")));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) if keep_unset => out.push_str(&format!("${{{name}}}")),
                (None, None) => return Err(InterpolateError::Unset(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "db".to_string())
    }

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(
            interpolate("pg://${HOST}:${PORT:-5432}/x", env).unwrap(),
            "pg://db:5432/x"
        );
        assert_eq!(interpolate("${NOPE:-}", env).unwrap(), "");
        assert_eq!(
            interpolate("cost $$5 and $x", env).unwrap(),
            "cost $5 and $x"
        );
    }

    #[test]
    fn reports_unset_and_malformed() {
        assert_eq!(
            interpolate("${NOPE}", env),
            Err(InterpolateError::Unset("NOPE".into()))
        );
        assert!(matches!(
            interpolate("${HOST", env),
            Err(InterpolateError::Malformed(_))
        ));
        assert!(matches!(
            interpolate("${A B}", env),
            Err(InterpolateError::Malformed(_))
        ));
    }
}
