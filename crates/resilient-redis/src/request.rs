//! One request as every topology sees it: a command or a pipeline, and its reply.

use redis::{Cmd, Pipeline, Value};

use crate::commands::{self, CommandSafety};

/// One request: a command or a pipeline (plain or atomic).
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipeline {
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    },
}

/// The reply to a [`Request`].
pub(crate) enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl<'a> Request<'a> {
    /// A whole pipeline, with the reply offsets redis-rs uses: an atomic one answers with the
    /// single `EXEC` reply after the queued confirmations.
    pub(crate) fn pipeline(pipeline: &'a Pipeline) -> Self {
        let (offset, count) = if pipeline.is_transaction() {
            (pipeline.len() + 1, 1)
        } else {
            (0, pipeline.len())
        };
        Request::Pipeline {
            pipeline,
            offset,
            count,
        }
    }

    /// The command table's verdict, `Err` with the reason when the client refuses it.
    pub(crate) fn safety(&self) -> Result<CommandSafety, &'static str> {
        match self {
            Request::Cmd(cmd) => commands::command_safety(cmd),
            Request::Pipeline { pipeline, .. } => commands::pipeline_safety(pipeline),
        }
    }
}

impl Reply {
    /// The single value of a command's reply.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Reply::One(v) => v,
            Reply::Many(mut v) => v.pop().unwrap_or(Value::Nil),
        }
    }

    /// The values of a pipeline's reply.
    pub(crate) fn into_values(self) -> Vec<Value> {
        match self {
            Reply::Many(v) => v,
            Reply::One(v) => vec![v],
        }
    }
}
