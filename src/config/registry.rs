//! What each connector of this build declares about itself: its type name,
//! URL schemes, the keys it reads and what it can do. The configuration's
//! checks ask these declarations and name no connector themselves; the
//! declarations live in each connector's folder (`src/connectors/*/mod.rs`)
//! and are listed once, in `connectors::CONNECTORS`. The keys each connector
//! reads are documented in `docs/configuration.md`.

/// One connector type.
pub struct Spec {
    /// `type = "…"` in `[source]` and `[target]`.
    pub kind: &'static str,
    /// The schemes its `url` may start with; empty: it takes no `url`.
    pub schemes: &'static [&'static str],
    /// Its sources and targets connect through a connection pool shared
    /// per system (URL without credentials), sized by `[engine]
    /// max_connections_per_system` and `[engine.systems."URL"]`.
    pub pooled: bool,
    pub source: Option<SourceSpec>,
    pub target: Option<TargetSpec>,
}

/// How a source hands over its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// A SQL table or query: any strategy; `table`, `query`, `tables`,
    /// `where`, children, an outbox table.
    Table,
    /// Read whole every run (a file, an API): `strategy = "diff"` only.
    Whole,
    /// A broker queue: each message is a change (`strategy = "outbox"`).
    Queue,
}

pub struct SourceSpec {
    pub reads: Reads,
    /// `strategy = "outbox"` on a `table` (an outbox table it can delete from).
    pub outbox_table: bool,
    /// The keys of `[source]` it reads beyond `type`, `key` and
    /// `connect_timeout`.
    pub keys: &'static [&'static str],
    /// Keys of its own that the connector parses into its typed options
    /// and checks, as for targets ([`TargetSpec::options`]).
    pub options: Option<fn(&toml::Table) -> Vec<OptionProblem>>,
}

/// How a target holds what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Rows of a SQL table: `table`, a required `key`, `mode`,
    /// `updated_at`, `create`.
    Table,
    /// Every change as a record (a file line, an HTTP item, a message).
    Records,
}

pub struct TargetSpec {
    pub writes: Writes,
    /// The keys of `[target]` it reads beyond `type`, `key` and
    /// `connect_timeout`.
    pub keys: &'static [&'static str],
    /// Keys of its own that the connector parses into its typed options
    /// (`deny_unknown_fields`) and checks: each problem as (key, message).
    /// The options travel to the connector as [`TargetOptions`].
    pub options: Option<fn(&toml::Table) -> Vec<OptionProblem>>,
    pub abilities: Abilities,
}

/// What a target can do beyond receiving each change. The configuration's
/// checks refuse a job that needs more; `tests/conformance.rs` runs each
/// behaviour against every target that declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Abilities {
    /// Reads each row's fields before a write, so conflicts are counted.
    pub images: bool,
    /// Gives new rows keys of its own (a one-column key no field maps),
    /// which ferry keeps in an id map.
    pub generates_keys: bool,
    /// Can refuse single items (a constraint, an HTTP 4xx): a refused batch
    /// is split until each refused item stands alone.
    pub refuses_items: bool,
}

impl Abilities {
    /// It takes each change as it comes, and nothing more.
    pub const NONE: Abilities = Abilities {
        images: false,
        generates_keys: false,
        refuses_items: false,
    };
}

impl Writes {
    /// The rules that need the target's rows: owners other than `source`,
    /// soft deletes, modes.
    pub fn keeps_rows(self) -> bool {
        self == Writes::Table
    }
}

/// A problem a connector found in its own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// The key at fault; None: the table as a whole.
    pub key: Option<String>,
    pub message: String,
}

impl OptionProblem {
    /// From a serde error of the connector's typed options: the first key
    /// it names in backticks that is one of the `given` keys.
    pub fn from_serde(error: &dyn std::fmt::Display, given: &[&str]) -> OptionProblem {
        let message = error.to_string();
        let key = message
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|k| given.contains(k))
            .map(str::to_string);
        OptionProblem { key, message }
    }
}

/// A connector's typed options (`#[serde(deny_unknown_fields)]`) from its
/// keys; the problem names the key at fault when the error does.
pub fn parse_options<T: serde::de::DeserializeOwned>(
    options: &toml::Table,
) -> Result<T, OptionProblem> {
    let given: Vec<&str> = options.keys().map(String::as_str).collect();
    T::deserialize(toml::Value::Table(options.clone()))
        .map_err(|e| OptionProblem::from_serde(&e, &given))
}

/// [`TargetSpec::options`] for options that need no check beyond their
/// types.
pub fn check_options<T: serde::de::DeserializeOwned>(options: &toml::Table) -> Vec<OptionProblem> {
    parse_options::<T>(options).err().into_iter().collect()
}

/// A connector's own `[target]` keys, as the file gives them, with every
/// `${VAR}` resolved: its constructor reads them into its typed options.
pub type TargetOptions = toml::Table;

/// What the connectors of this build accept, as they declare it.
pub struct Registry<'r> {
    pub connectors: &'r [&'r Spec],
}

impl Registry<'_> {
    pub fn spec(&self, kind: &str) -> Option<&Spec> {
        self.connectors.iter().find(|s| s.kind == kind).copied()
    }

    pub fn source(&self, kind: &str) -> Option<&SourceSpec> {
        self.spec(kind).and_then(|s| s.source.as_ref())
    }

    pub fn target(&self, kind: &str) -> Option<&TargetSpec> {
        self.spec(kind).and_then(|s| s.target.as_ref())
    }

    /// The types that can be a source (`source`) or a target, in order.
    pub fn kinds(&self, source: bool) -> Vec<&'static str> {
        self.connectors
            .iter()
            .filter(|s| match source {
                true => s.source.is_some(),
                false => s.target.is_some(),
            })
            .map(|s| s.kind)
            .collect()
    }

    /// The types whose sources read as `reads`, for messages.
    /// The target types that keep rows (owners, soft deletes, modes).
    pub fn targets_keeping_rows(&self) -> Vec<&'static str> {
        self.connectors
            .iter()
            .filter(|c| c.target.as_ref().is_some_and(|t| t.writes.keeps_rows()))
            .map(|c| c.kind)
            .collect()
    }

    pub fn sources_reading(&self, reads: Reads) -> Vec<&'static str> {
        self.connectors
            .iter()
            .filter(|s| s.source.as_ref().is_some_and(|r| r.reads == reads))
            .map(|s| s.kind)
            .collect()
    }
}

/// Joins type names for a message: "`a`, `b` or `c`".
pub fn one_of(kinds: &[&str]) -> String {
    let quoted: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serde_error_names_its_key() {
        let p = OptionProblem::from_serde(
            &"unknown field `stram`, expected one of `stream`, `maxlen`",
            &["stram", "url"],
        );
        assert_eq!(p.key.as_deref(), Some("stram"));
        let p = OptionProblem::from_serde(&"invalid type for `maxlen`", &["maxlen"]);
        assert_eq!(p.key.as_deref(), Some("maxlen"));
    }
}
