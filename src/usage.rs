//! A usage error: what the user asked for is wrong (exit status 2, one line naming the problem
//! and the fix), as opposed to a failure while running. The lowest module: everything that
//! checks what it was given may use it.

#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}
