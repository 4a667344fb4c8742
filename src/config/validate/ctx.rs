//! Interpolation and located errors for one file, and the checks of
//! values every section shares (durations, column lists, URLs, paths).
use super::*;

/// Interpolation and located errors for one file.
pub struct Ctx<'a, 'e> {
    pub src: SourceText<'a>,
    pub env: &'e dyn Fn(&str) -> Option<String>,
    pub dir: &'a Path,
    /// Unset variables stay as `${VAR}` (see [`super::load_offline`]).
    pub keep_unset: bool,
    /// What the connectors of this build accept.
    pub reg: &'a Registry<'a>,
}

impl Ctx<'_, '_> {
    /// The interpolated string value, or None after recording why it failed.
    pub fn text(&mut self, v: &S<String>) -> Option<String> {
        match interpolate_or_keep(v.get_ref(), |n| (self.env)(n), self.keep_unset) {
            Ok(s) => Some(s),
            Err(e) => {
                self.src.error(v.span(), e.to_string());
                None
            }
        }
    }

    pub(super) fn opt_text(&mut self, v: &Option<S<String>>) -> Option<String> {
        v.as_ref().and_then(|v| self.text(v))
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        v: &S<String>,
        key: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let s = self.text(v)?;
        match options.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
                self.src.error(
                    v.span(),
                    format!("`{key}` is `{s}`; expected one of {}", names.join(", ")),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, v: &Option<S<String>>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        let Some(s) = self.text(v) else {
            return default;
        };
        match humantime::parse_duration(&s) {
            Ok(d) => d,
            Err(e) => {
                self.src.error(
                    v.span(),
                    format!("`{key}` = `{s}` is not a duration like \"5s\" or \"10m\": {e}"),
                );
                default
            }
        }
    }

    pub(crate) fn int(
        &mut self,
        v: &Option<S<i64>>,
        key: &str,
        range: (i64, i64),
        default: i64,
    ) -> i64 {
        match v {
            None => default,
            Some(v) if (range.0..=range.1).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.src.error(
                    v.span(),
                    format!(
                        "`{key}` = {} is out of range {}..={}",
                        v.get_ref(),
                        range.0,
                        range.1
                    ),
                );
                default
            }
        }
    }

    /// A column list: present, not empty, no name twice.
    pub(super) fn columns(
        &mut self,
        v: &Option<S<Vec<S<String>>>>,
        table_span: Range<usize>,
        what: &str,
    ) -> Vec<String> {
        let Some(list) = v else {
            self.src.error(
                table_span,
                format!("{what} needs `key`, the column(s) that identify an object"),
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.src
                .error(list.span(), format!("{what} `key` is empty"));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in list.get_ref() {
            let Some(name) = self.text(c) else { continue };
            if name.is_empty() {
                self.src
                    .error(c.span(), format!("{what} `key` has an empty column name"));
            } else if !seen.insert(name.clone()) {
                self.src.error(
                    c.span(),
                    format!("{what} `key` names column `{name}` twice"),
                );
            } else {
                out.push(name);
            }
        }
        out
    }

    pub(super) fn url(
        &mut self,
        v: &Option<S<String>>,
        kind: &str,
        table_span: Range<usize>,
        what: &str,
    ) -> Option<String> {
        let Some(v) = v else {
            self.src
                .error(table_span, format!("{what} of type `{kind}` needs `url`"));
            return None;
        };
        let url = self.text(v)?;
        // An unset variable kept as `${VAR}`: nothing to check yet.
        if self.keep_unset && url.contains("${") {
            return Some(url);
        }
        let schemes: &[&str] = self.reg.spec(kind).map_or(&[], |s| s.schemes);
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        if !schemes.contains(&scheme) {
            self.src.error(
                v.span(),
                format!(
                    "{what} url `{}` must start with {} for type `{kind}`",
                    crate::redact::url(&url),
                    schemes
                        .iter()
                        .map(|s| format!("`{s}:`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
            return None;
        }
        Some(if scheme == "sqlite" {
            resolve_sqlite_url(&url, self.dir)
        } else {
            url
        })
    }

    pub(super) fn path(
        &mut self,
        v: &Option<S<String>>,
        table_span: Range<usize>,
        what: &str,
    ) -> Option<std::path::PathBuf> {
        let Some(v) = v else {
            self.src.error(table_span, format!("{what} needs `path`"));
            return None;
        };
        let p = self.text(v)?;
        Some(self.dir.join(p))
    }

    pub(super) fn kind(&mut self, v: &S<String>, what: &str) -> Option<String> {
        let k = self.text(v)?;
        let kinds = self.reg.kinds(what == "source");
        if !kinds.contains(&k.as_str()) {
            self.src.error(
                v.span(),
                format!(
                    "unknown {what} type `{k}`; expected one of {}",
                    kinds.join(", ")
                ),
            );
            return None;
        }
        Some(k)
    }

    /// How a source of `kind` (already checked) reads.
    pub(super) fn reads(&self, kind: &str) -> Option<Reads> {
        self.reg.source(kind).map(|s| s.reads)
    }

    /// Whether a target of `kind` (already checked) writes table rows.
    pub(super) fn writes_rows(&self, kind: &str) -> bool {
        self.reg
            .target(kind)
            .is_some_and(|t| t.writes == Writes::Table)
    }

    /// Records an error for a key that the connector type does not use.
    pub(super) fn unused<T>(&mut self, v: &Option<S<T>>, key: &str, kind: &str, what: &str) {
        if let Some(v) = v {
            self.src.error(
                v.span(),
                format!("`{key}` does not apply to a {what} of type `{kind}`"),
            );
        }
    }
}
