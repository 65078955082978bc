//! Client histories: what each simulated client asked the key-value store and what it got back.
//!
//! The simulator's clients call [`History::invoke`] when they send a request and
//! [`History::complete`] when the reply arrives; a request that never gets a reply stays
//! incomplete. The finished history goes to the linearizability checker
//! ([`crate::linearizability::check`]) and can be saved as JSON lines, one object per operation,
//! in this schema (a public contract shared with external tools, keep it exactly):
//!
//! ```text
//! {"process": 3, "type": "put"|"get"|"cas", "key": "k", "value": "v"|null, "expected": "e"|null,
//!  "result": "ok"|"v"|null|true|false, "invoke": 120, "complete": 250|null}
//! ```
//!
//! - `put`: `value` is the value written, `result` is `"ok"`.
//! - `get`: `value` is null, `result` is the value read, or null when the key was absent.
//! - `cas`: `value` is the new value, `expected` the value the key must hold (null: the key must
//!   be absent), `result` is `true` when the swap happened.
//! - An operation that never completed has `"result": null` and `"complete": null`.
//!
//! A completed get of an absent key and an incomplete operation both write `"result": null`, so
//! reading a line decides what `result` means from `type` and `complete` together.

use std::io::Write;

use serde::{Deserialize, Serialize, Serializer};

/// The kind of a client operation on the key-value store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Set the key to `value`.
    Put,
    /// Read the key.
    Get,
    /// Compare-and-swap: set the key to `value` only if it currently holds `expected`.
    Cas,
    /// Remove the key (absent afterwards, as if never written).
    Delete,
}

/// What a completed operation returned.
///
/// Serialized as the schema's `result` field: `Ok` as `"ok"`, `Value(Some(v))` as `"v"`,
/// `Value(None)` as `null`, `Swapped(b)` as `b`. There is no standalone `Deserialize`: a bare
/// JSON string is `Ok` for a put but a value for a get, so [`OpResult::from_json`] needs the
/// operation's kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// A put was acknowledged.
    Ok,
    /// A get read this value (`None`: the key was absent).
    Value(Option<String>),
    /// A cas reported whether it swapped.
    Swapped(bool),
}

impl OpResult {
    /// Whether this result is the kind of answer an operation of `kind` gives.
    #[must_use]
    pub fn fits(&self, kind: OpKind) -> bool {
        matches!(
            (kind, self),
            (OpKind::Put | OpKind::Delete, OpResult::Ok)
                | (OpKind::Get, OpResult::Value(_))
                | (OpKind::Cas, OpResult::Swapped(_))
        )
    }

    /// The schema's JSON form of this result.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            OpResult::Ok => serde_json::Value::String("ok".to_owned()),
            OpResult::Value(Some(value)) => serde_json::Value::String(value.clone()),
            OpResult::Value(None) => serde_json::Value::Null,
            OpResult::Swapped(swapped) => serde_json::Value::Bool(*swapped),
        }
    }

    /// Reads the `result` field of a completed operation of `kind`.
    ///
    /// # Errors
    /// When `json` is not a result an operation of `kind` can give.
    pub fn from_json(kind: OpKind, json: &serde_json::Value) -> Result<OpResult, String> {
        match (kind, json) {
            (OpKind::Put | OpKind::Delete, serde_json::Value::String(text)) if text == "ok" => {
                Ok(OpResult::Ok)
            }
            (OpKind::Get, serde_json::Value::String(text)) => {
                Ok(OpResult::Value(Some(text.clone())))
            }
            (OpKind::Get, serde_json::Value::Null) => Ok(OpResult::Value(None)),
            (OpKind::Cas, serde_json::Value::Bool(swapped)) => Ok(OpResult::Swapped(*swapped)),
            _ => Err(format!(
                "a completed {kind:?} cannot have result {json} \
                 (put, delete: \"ok\", get: a string or null, cas: true or false)"
            )),
        }
    }
}

impl Serialize for OpResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// One client operation: its request, its reply if any, and when each happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HistoryOpJson", into = "HistoryOpJson")]
pub struct HistoryOp {
    /// The client that issued the operation.
    pub process: u64,
    /// Put, get or cas (JSON field `type`).
    pub kind: OpKind,
    /// The key operated on.
    pub key: String,
    /// Put: the value written. Cas: the new value. Get: `None`.
    pub value: Option<String>,
    /// Cas: the value the key must hold for the swap (`None`: the key must be absent).
    pub expected: Option<String>,
    /// The reply, or `None` if the operation never completed.
    pub result: Option<OpResult>,
    /// When the client sent the request, in simulated nanoseconds.
    pub invoke: u64,
    /// When the client got the reply, in simulated nanoseconds; `None` if it never did.
    pub complete: Option<u64>,
}

/// The JSON-lines form of a [`HistoryOp`], field for field in schema order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryOpJson {
    process: u64,
    #[serde(rename = "type")]
    kind: OpKind,
    key: String,
    value: Option<String>,
    #[serde(default)]
    expected: Option<String>,
    result: serde_json::Value,
    invoke: u64,
    complete: Option<u64>,
}

impl From<HistoryOp> for HistoryOpJson {
    fn from(op: HistoryOp) -> HistoryOpJson {
        HistoryOpJson {
            process: op.process,
            kind: op.kind,
            key: op.key,
            value: op.value,
            expected: op.expected,
            result: op
                .result
                .map_or(serde_json::Value::Null, |result| result.to_json()),
            invoke: op.invoke,
            complete: op.complete,
        }
    }
}

impl TryFrom<HistoryOpJson> for HistoryOp {
    type Error = String;

    fn try_from(json: HistoryOpJson) -> Result<HistoryOp, String> {
        let result = match json.complete {
            None if json.result.is_null() => None,
            None => return Err(format!("incomplete op has result {}", json.result)),
            Some(complete) if complete < json.invoke => {
                return Err(format!(
                    "completes at {complete} before invoke {}",
                    json.invoke
                ));
            }
            Some(_) => Some(OpResult::from_json(json.kind, &json.result)?),
        };
        if matches!(json.kind, OpKind::Get | OpKind::Delete) && json.value.is_some() {
            return Err(format!("a {:?} carries no value", json.kind));
        }
        if json.kind != OpKind::Cas && json.expected.is_some() {
            return Err(format!(
                "only a cas carries expected, not a {:?}",
                json.kind
            ));
        }
        Ok(HistoryOp {
            process: json.process,
            kind: json.kind,
            key: json.key,
            value: json.value,
            expected: json.expected,
            result,
            invoke: json.invoke,
            complete: json.complete,
        })
    }
}

/// Every operation the clients of one run issued, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations, indexed by the value [`History::invoke`] returned.
    pub ops: Vec<HistoryOp>,
}

impl History {
    /// An empty history.
    #[must_use]
    pub fn new() -> History {
        History { ops: Vec::new() }
    }

    /// Records that `process` sent a request at `invoke_ns`; returns the index to pass to
    /// [`History::complete`] when the reply arrives.
    ///
    /// # Panics
    /// If a get carries a value or a put or get carries `expected`: a bug in the caller.
    pub fn invoke(
        &mut self,
        process: u64,
        kind: OpKind,
        key: String,
        value: Option<String>,
        expected: Option<String>,
        invoke_ns: u64,
    ) -> usize {
        assert!(
            !matches!(kind, OpKind::Get | OpKind::Delete) || value.is_none(),
            "a get or delete carries no value"
        );
        assert!(
            kind == OpKind::Cas || expected.is_none(),
            "only a cas carries expected"
        );
        self.ops.push(HistoryOp {
            process,
            kind,
            key,
            value,
            expected,
            result: None,
            invoke: invoke_ns,
            complete: None,
        });
        self.ops.len() - 1
    }

    /// Records the reply to the operation at `index`, received at `complete_ns`.
    ///
    /// # Panics
    /// If the operation already completed, completes before it was invoked, or `result` is not
    /// an answer its kind can give: each is a bug in the caller.
    pub fn complete(&mut self, index: usize, result: OpResult, complete_ns: u64) {
        let op = &mut self.ops[index];
        assert!(op.complete.is_none(), "op {index} completed twice");
        assert!(
            complete_ns >= op.invoke,
            "op {index} completes before its invoke"
        );
        assert!(
            result.fits(op.kind),
            "op {index}: {result:?} is no answer to a {:?}",
            op.kind
        );
        op.result = Some(result);
        op.complete = Some(complete_ns);
    }

    /// The history as JSON lines, one operation per line, each line ending in `\n`.
    ///
    /// # Panics
    /// Never: writing to memory cannot fail.
    #[must_use]
    pub fn to_json_lines(&self) -> String {
        let mut out = Vec::new();
        self.write_json_lines(&mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Writes the history as JSON lines to `writer`.
    ///
    /// # Errors
    /// When `writer` fails.
    pub fn write_json_lines(&self, mut writer: impl Write) -> std::io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut writer, op)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Parses JSON lines written by [`History::to_json_lines`] or another tool using the schema.
    /// Blank lines are skipped.
    ///
    /// # Errors
    /// A message naming the first line (1-based) that is not a valid operation and why.
    pub fn from_json_lines(text: &str) -> Result<History, String> {
        let mut ops = Vec::new();
        for (line_index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op: HistoryOp = serde_json::from_str(line)
                .map_err(|error| format!("history line {}: {error}", line_index + 1))?;
            ops.push(op);
        }
        Ok(History { ops })
    }
}
