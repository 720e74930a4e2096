//! Rejections: the user asked for something the rules forbid. A value with a stable code, the
//! rule it enforces and a message that says what would be right; the type is the wire's
//! (`schemas::result`).

pub use schemas::result::{Code, Rejection};
