//! The response envelope every JSON reply is wrapped in (sync, async, error), with LXD's status codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseType {
    Sync,
    Async,
    Error,
}

/// LXD's operation and response status codes (`status_code` in envelopes and operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum StatusCode {
    OperationCreated = 100,
    Started = 101,
    Stopped = 102,
    Running = 103,
    Cancelling = 104,
    Pending = 105,
    Starting = 106,
    Stopping = 107,
    Aborting = 108,
    Freezing = 109,
    Frozen = 110,
    Thawed = 111,
    Error = 112,
    Ready = 113,
    Success = 200,
    Failure = 400,
    Cancelled = 401,
}

impl StatusCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The English word LXD puts in `status` next to the code.
    pub fn text(self) -> &'static str {
        match self {
            StatusCode::OperationCreated => "Operation created",
            StatusCode::Started => "Started",
            StatusCode::Stopped => "Stopped",
            StatusCode::Running => "Running",
            StatusCode::Cancelling => "Cancelling",
            StatusCode::Pending => "Pending",
            StatusCode::Starting => "Starting",
            StatusCode::Stopping => "Stopping",
            StatusCode::Aborting => "Aborting",
            StatusCode::Freezing => "Freezing",
            StatusCode::Frozen => "Frozen",
            StatusCode::Thawed => "Thawed",
            StatusCode::Error => "Error",
            StatusCode::Ready => "Ready",
            StatusCode::Success => "Success",
            StatusCode::Failure => "Failure",
            StatusCode::Cancelled => "Cancelled",
        }
    }
}

/// One reply. All seven keys are always present on the wire, as LXD writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: ResponseType,
    pub status: String,
    pub status_code: u16,
    pub operation: String,
    pub error_code: u16,
    pub error: String,
    pub metadata: Value,
}

impl Envelope {
    pub fn sync(metadata: Value) -> Self {
        Envelope {
            kind: ResponseType::Sync,
            status: StatusCode::Success.text().to_owned(),
            status_code: StatusCode::Success.code(),
            operation: String::new(),
            error_code: 0,
            error: String::new(),
            metadata,
        }
    }

    /// The reply to a request that started an operation; `metadata` is the operation object.
    pub fn async_op(operation_url: String, metadata: Value) -> Self {
        Envelope {
            kind: ResponseType::Async,
            status: StatusCode::OperationCreated.text().to_owned(),
            status_code: StatusCode::OperationCreated.code(),
            operation: operation_url,
            error_code: 0,
            error: String::new(),
            metadata,
        }
    }

    pub fn error(http_status: u16, message: impl Into<String>) -> Self {
        Envelope {
            kind: ResponseType::Error,
            status: String::new(),
            status_code: 0,
            operation: String::new(),
            error_code: http_status,
            error: message.into(),
            metadata: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_in_each_kind() {
        for env in [
            Envelope::sync(Value::Null),
            Envelope::async_op("/1.0/operations/x".into(), Value::Null),
            Envelope::error(403, "not authorized"),
        ] {
            let v = serde_json::to_value(&env).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "type",
                    "status",
                    "status_code",
                    "operation",
                    "error_code",
                    "error",
                    "metadata"
                ]
            );
        }
    }

    #[test]
    fn error_shape_matches_lxd() {
        let v = serde_json::to_value(Envelope::error(404, "not found")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","status":"","status_code":0,"operation":"",
                "error_code":404,"error":"not found","metadata":null})
        );
    }
}
