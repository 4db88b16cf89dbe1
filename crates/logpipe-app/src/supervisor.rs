//! Named tasks in stages, and the ordered shutdown.
//!
//! A process runs its roles as tasks, each in a stage. The stages stop in
//! the order they were added: for `logpipe up` that is ingest (HTTP server,
//! generator, report scheduler, status line) first, so nothing new is
//! acknowledged; then the stream jobs, which drain the bus and commit; then
//! the sinks (the webhook's last retries); the bus itself is shut down
//! last by the caller. Each stage has its own shutdown signal, so a job
//! keeps draining while ingest is already closed.
//!
//! The run ends on a signal, or when a task fails (its name is in the
//! error), or when a task of a stage marked [`Ends::Run`] returns (a stream
//! job never returns on its own). Every task is owned here: nothing is
//! spawned and forgotten.

use futures::future::select_all;
use logpipe_core::job::Shutdown;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What a task of a stage returning on its own means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// The run ends (stream jobs: they run until told to stop).
    Run,
    /// Nothing (a scheduler with no schedule, a finished status line).
    Nothing,
}

/// A stage's index, from [`Supervisor::stage`].
#[derive(Debug, Clone, Copy)]
pub struct StageId(usize);

struct Stage {
    name: &'static str,
    ends: Ends,
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

/// The tasks of a process, in stages (see the module docs).
#[derive(Default)]
pub struct Supervisor {
    stages: Vec<Stage>,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Adds a stage; stages stop in the order they are added.
    pub fn stage(&mut self, name: &'static str, ends: Ends) -> StageId {
        let (stop, _) = watch::channel(false);
        self.stages.push(Stage {
            name,
            ends,
            stop,
            tasks: JoinSet::new(),
        });
        StageId(self.stages.len() - 1)
    }

    /// The shutdown signal of `stage`'s tasks.
    pub fn shutdown(&self, stage: StageId) -> Shutdown {
        self.stages[stage.0].stop.subscribe()
    }

    /// Runs `task`, named `name` in messages, in `stage`.
    pub fn spawn(
        &mut self,
        stage: StageId,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.stages[stage.0]
            .tasks
            .spawn(async move { (name, task.await) });
    }

    /// Runs until `signal` resolves (its value is logged) or a task ends
    /// the run (see the module docs), then stops every stage in order,
    /// waiting for each one's tasks. Returns the first failure.
    pub async fn run(mut self, signal: impl Future<Output = &'static str>) -> anyhow::Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        tokio::pin!(signal);
        loop {
            let running: Vec<usize> = (0..self.stages.len())
                .filter(|&i| !self.stages[i].tasks.is_empty())
                .collect();
            if running.is_empty() {
                signal.await;
                break;
            }
            let (ended, stage) = {
                let waits = self
                    .stages
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, stage)| !stage.tasks.is_empty())
                    .map(|(i, stage)| Box::pin(async move { (stage.tasks.join_next().await, i) }));
                tokio::select! {
                    name = &mut signal => {
                        tracing::info!("{name}: stopping");
                        break;
                    }
                    ((ended, stage), _, _) = select_all(waits) => (ended, stage),
                }
            };
            let Some(ended) = ended else { continue };
            let stage = &self.stages[stage];
            match outcome(ended) {
                Err(error) => {
                    first_error = Some(error);
                    break;
                }
                Ok(name) if stage.ends == Ends::Run => {
                    tracing::info!(task = name, stage = stage.name, "a task ended; stopping");
                    break;
                }
                Ok(_) => {}
            }
        }
        for stage in &mut self.stages {
            let _ = stage.stop.send(true);
            while let Some(ended) = stage.tasks.join_next().await {
                if let Err(error) = outcome(ended)
                    && first_error.is_none()
                {
                    first_error = Some(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A finished task's name, or its failure named after it.
fn outcome(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<&'static str> {
    match ended {
        Ok((name, Ok(()))) => Ok(name),
        Ok((name, Err(error))) => Err(error.context(format!("the {name} stopped"))),
        Err(error) => Err(anyhow::anyhow!("a task panicked: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stages_stop_in_order_and_the_first_failure_is_named() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut supervisor = Supervisor::new();
        let ingest = supervisor.stage("ingest", Ends::Nothing);
        let jobs = supervisor.stage("jobs", Ends::Run);
        for (stage, name) in [(ingest, "server"), (jobs, "raw→lake job")] {
            let mut stop = supervisor.shutdown(stage);
            let order = order.clone();
            supervisor.spawn(stage, name, async move {
                let _ = stop.wait_for(|s| *s).await;
                order.lock().unwrap().push(name);
                Ok(())
            });
        }
        supervisor.spawn(ingest, "scheduler", async { Ok(()) });
        let failing = supervisor.stage("sinks", Ends::Nothing);
        supervisor.spawn(failing, "webhook", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            anyhow::bail!("unreachable")
        });
        let error = supervisor
            .run(std::future::pending())
            .await
            .expect_err("the webhook failed");
        assert_eq!(error.to_string(), "the webhook stopped");
        assert_eq!(*order.lock().unwrap(), ["server", "raw→lake job"]);
    }

    #[tokio::test]
    async fn a_signal_stops_everything_cleanly() {
        let mut supervisor = Supervisor::new();
        let jobs = supervisor.stage("jobs", Ends::Run);
        let mut stop = supervisor.shutdown(jobs);
        supervisor.spawn(jobs, "job", async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        });
        supervisor
            .run(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "SIGTERM"
            })
            .await
            .unwrap();
    }
}
