//! Rejections: the user asked for something the rules forbid. A value with a stable snake_case
//! code, the rule it enforces and a message that says what would be right.

use serde::Serialize;

/// A refused command. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Stable snake_case code, e.g. `outside_business_hours`.
    pub code: &'static str,
    /// The DOMAIN.md rule, e.g. `R5`; empty for input errors that no rule names.
    pub rule: &'static str,
    /// What was wrong and what would be right.
    pub message: String,
}

impl Rejection {
    /// A rejection under a rule.
    pub fn new(code: &'static str, rule: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            rule,
            message: message.into(),
        }
    }

    /// Malformed or impossible input.
    pub fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new("invalid_command", "", message)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.rule.is_empty() {
            write!(f, "{}: {}", self.code, self.message)
        } else {
            write!(f, "{} ({}): {}", self.code, self.rule, self.message)
        }
    }
}
