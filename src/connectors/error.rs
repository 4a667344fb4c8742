use std::fmt;

/// What went wrong talking to an external system. `system` is redacted and
/// names the connector and where it points; `object` the table, file or queue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The system could not be reached; nothing was written, retry later.
    #[error("{system} could not be reached: {detail}")]
    Unreachable { system: String, detail: String },
    /// The system refused us for good: wrong credentials, no such database,
    /// no permission. Nothing is sent or retried until someone changes the
    /// configuration (exit 78).
    #[error("{system} refused access: {detail} (fix the configuration: credentials, database name, permissions)")]
    Refused { system: String, detail: String },
    /// The system answered, but the object does not exist.
    #[error("{system}: {object} does not exist: {detail}")]
    MissingObject {
        system: String,
        object: String,
        detail: String,
    },
    /// The system refused the data itself (type or constraint violation).
    #[error("{system}: {object} rejected the data: {detail}")]
    Rejected {
        system: String,
        object: String,
        detail: String,
    },
    /// A failure that goes away by itself: deadlock, serialization conflict,
    /// lock or statement timeout, 5xx, 429. The items are tried again later.
    #[error("{system}: {object}: {detail} (transient)")]
    Transient {
        system: String,
        object: String,
        detail: String,
    },
    /// Any other failure of the system or its data.
    #[error("{system}: {object}: {detail}")]
    Failed {
        system: String,
        object: String,
        detail: String,
    },
}

impl ConnectorError {
    pub fn unsupported(kind: &str) -> ConnectorError {
        ConnectorError::Failed {
            system: kind.to_string(),
            object: "connector".to_string(),
            detail: "not available in this build".to_string(),
        }
    }

    /// The same error with its detail rewritten.
    pub fn map_detail(self, f: impl FnOnce(&str) -> String) -> ConnectorError {
        use ConnectorError as E;
        match self {
            E::Unreachable { system, detail } => E::Unreachable {
                detail: f(&detail),
                system,
            },
            E::Refused { system, detail } => E::Refused {
                detail: f(&detail),
                system,
            },
            E::MissingObject {
                system,
                object,
                detail,
            } => E::MissingObject {
                detail: f(&detail),
                system,
                object,
            },
            E::Rejected {
                system,
                object,
                detail,
            } => E::Rejected {
                detail: f(&detail),
                system,
                object,
            },
            E::Transient {
                system,
                object,
                detail,
            } => E::Transient {
                detail: f(&detail),
                system,
                object,
            },
            E::Failed {
                system,
                object,
                detail,
            } => E::Failed {
                detail: f(&detail),
                system,
                object,
            },
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConnectorError::Unreachable { .. })
    }

    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectorError::Refused { .. })
    }

    /// The system cannot be used now (unreachable, or refusing our
    /// credentials): the run stops sending, and its items stay queued
    /// without spending an attempt.
    pub fn stops_run(&self) -> bool {
        self.is_unreachable() || self.is_refused()
    }

    pub fn refused(system: &str, detail: impl fmt::Display) -> ConnectorError {
        ConnectorError::Refused {
            system: system.to_string(),
            detail: detail.to_string(),
        }
    }

    /// The target refused these items themselves: retrying them as they are
    /// cannot succeed, and a smaller batch may isolate the culprit.
    pub fn is_rejection(&self) -> bool {
        matches!(self, ConnectorError::Rejected { .. })
    }

    pub fn failed(system: &str, object: &str, detail: impl fmt::Display) -> ConnectorError {
        ConnectorError::Failed {
            system: system.to_string(),
            object: object.to_string(),
            detail: detail.to_string(),
        }
    }
}
