//! patience's own errors: everything that makes it exit 125 before or
//! instead of running the command. One enum, messages a user can act on.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A bad command line: the message names the option and the value.
    Usage(String),
    /// A bad config file, profile or environment value: the message names
    /// the file, the line and the key (or the variable).
    Config(String),
    /// Any other failure of patience itself (I/O, threads, state).
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}\nTry 'patience --help' for more information."),
            Error::Config(m) | Error::Internal(m) => f.write_str(m),
        }
    }
}

impl From<lexopt::Error> for Error {
    fn from(e: lexopt::Error) -> Self {
        Error::Usage(e.to_string())
    }
}

/// The exit status for patience's own failures, as `timeout` and `env` use.
pub const EXIT_INTERNAL: i32 = 125;
