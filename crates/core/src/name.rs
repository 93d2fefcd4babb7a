//! Names: [`QueueName`] and the rule for task kinds.
//!
//! Names appear in URLs, metric labels, Redis keys and file names, so they are restricted to
//! characters that are safe in all of them: ASCII letters, digits and `_ - . :`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::limits;

/// A queue's name: 1 to [`limits::QUEUE_NAME_LEN_MAX`] bytes of ASCII letters, digits and
/// `_ - . :`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates `name` as a queue name.
    pub fn new(name: &str) -> Result<Self, BrokerError> {
        check_name("queue", name, limits::QUEUE_NAME_LEN_MAX)?;
        Ok(QueueName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a task kind (the name a handler is registered under): the same rule as queue names,
/// up to [`limits::KIND_LEN_MAX`] bytes.
pub fn check_kind(kind: &str) -> Result<(), BrokerError> {
    check_name("kind", kind, limits::KIND_LEN_MAX)
}

fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::invalid(field, "must not be empty"));
    }
    if name.len() > max {
        return Err(BrokerError::invalid(
            field,
            format!("is {} bytes long; the limit is {max}", name.len()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(BrokerError::invalid(
            field,
            format!("{name:?} contains {bad:?}; use ASCII letters, digits and _ - . :"),
        ));
    }
    Ok(())
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for QueueName {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::new(s)
    }
}

impl TryFrom<String> for QueueName {
    type Error = BrokerError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        QueueName::new(&name)
    }
}

impl TryFrom<&str> for QueueName {
    type Error = BrokerError;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        QueueName::new(name)
    }
}

impl From<QueueName> for String {
    fn from(name: QueueName) -> String {
        name.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_names() {
        for name in ["orders", "emails.high", "tenant-7:webhooks", "A_1"] {
            assert_eq!(QueueName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_unsafe_names_and_says_why() {
        let empty = QueueName::new("").unwrap_err().to_string();
        assert!(
            empty.contains("queue") && empty.contains("empty"),
            "{empty}"
        );
        let slash = QueueName::new("a/b").unwrap_err().to_string();
        assert!(slash.contains("'/'"), "{slash}");
        let long = "x".repeat(limits::QUEUE_NAME_LEN_MAX + 1);
        assert!(
            QueueName::new(&long)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(
            check_kind("send email")
                .unwrap_err()
                .to_string()
                .contains("kind")
        );
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<QueueName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<QueueName>("\"not ok\"").is_err());
    }
}
