//! Why a verb failed, in gRPC's terms: each failure keeps the code a client can act on.
use tonic::Status;

use crate::{store::StoreError, token::Refusal, Error};

#[derive(Debug)]
pub enum Fault {
    /// A token refused: the `index`-th of the request.
    Refused {
        index: usize,
        refused: Refusal,
    },
    InvalidArgument(String),
    NotFound(String),
    FailedPrecondition(String),
    PermissionDenied(String),
    ResourceExhausted(String),
    Unavailable(String),
    Internal(String),
}

impl Fault {
    pub fn store(e: StoreError) -> Self {
        match &e {
            StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Self::ResourceExhausted(format!(
                    "the state directory is full; nothing was changed ({e})"
                ))
            }
            _ => Self::Internal(format!("the store failed; nothing was changed ({e})")),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { index, refused } => {
                write!(f, "admissions[{index}]: {} ({})", refused.reason, refused.detail)
            }
            Self::InvalidArgument(m)
            | Self::NotFound(m)
            | Self::FailedPrecondition(m)
            | Self::PermissionDenied(m)
            | Self::ResourceExhausted(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => f.write_str(m),
        }
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        match e {
            Error::MapFull { .. } => Self::ResourceExhausted(e.to_string()),
            // The filter is not on the interface: the same call succeeds once it is.
            Error::NotAttached { .. } | Error::NoInterface(_) => Self::Unavailable(e.to_string()),
            Error::NoPrivilege { .. } => Self::PermissionDenied(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<Fault> for Status {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Refused { ref refused, .. } => match refused.reason {
                "malformed" | "oversized" => Status::invalid_argument(f.to_string()),
                "not_configured" => Status::failed_precondition(f.to_string()),
                // The keys to check it with are missing or too old: retry once they are back.
                "no_keys" | "keys_stale" => Status::unavailable(f.to_string()),
                _ => Status::permission_denied(f.to_string()),
            },
            Fault::InvalidArgument(m) => Status::invalid_argument(m),
            Fault::NotFound(m) => Status::not_found(m),
            Fault::FailedPrecondition(m) => Status::failed_precondition(m),
            Fault::PermissionDenied(m) => Status::permission_denied(m),
            Fault::ResourceExhausted(m) => Status::resource_exhausted(m),
            Fault::Unavailable(m) => Status::unavailable(m),
            Fault::Internal(m) => Status::internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn library_errors_keep_a_code_a_client_can_act_on() {
        let code = |e: Error| Status::from(Fault::from(e)).code();
        let pins = std::path::PathBuf::from("/sys/fs/bpf/edge/eth9");
        assert_eq!(code(Error::NotAttached { iface: "eth9".into(), pins }), Code::Unavailable);
        assert_eq!(code(Error::NoInterface("eth9".into())), Code::Unavailable);
        assert_eq!(code(Error::NoPrivilege { what: "attaching" }), Code::PermissionDenied);
        let full = Error::MapFull { map: "allow", capacity: 1, wanted: 2 };
        assert_eq!(code(full), Code::ResourceExhausted);
        assert_eq!(code(Error::Load("verifier".into())), Code::Internal);
    }
}
