//! One file per command, each a few lines over `logpipe_app`.

pub(crate) mod batch;
pub(crate) mod cdc;
pub(crate) mod check;
pub(crate) mod collector;
pub(crate) mod compact;
pub(crate) mod generate;
pub(crate) mod jobs;
pub(crate) mod ready;
pub(crate) mod sql;
pub(crate) mod stream;
pub(crate) mod tail;
pub(crate) mod token;
pub(crate) mod up;
