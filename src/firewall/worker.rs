//! The firewall's own thread: every kernel call runs there, in order, so that the async
//! loop never blocks on netlink and one thread makes every commit (the ruleset watch knows
//! our changes by that thread's id).

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Firewall, KernelError};

type Job = Box<dyn FnOnce(&mut dyn Firewall) + Send>;

/// A thread that owns a [`Firewall`] and runs the calls sent to it, one at a time.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the worker thread; it ends when every handle is dropped.
    pub fn spawn(mut firewall: impl Firewall) -> Worker {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("firewall".into())
            .spawn(move || {
                for job in queue {
                    job(&mut firewall);
                }
            })
            .expect("a thread for the firewall");
        Worker { jobs }
    }

    /// Queues `call` on the worker without waiting for it (from a thread that is not the
    /// loop's: the mount watch).
    pub fn submit(&self, call: impl FnOnce(&mut dyn Firewall) + Send + 'static) {
        let _ = self.jobs.send(Box::new(call));
    }

    /// Runs `call` on the worker in the network namespace mounted at `netns` (the
    /// worker's own when `None`), and waits for its result.
    pub async fn call_in<T: Send + 'static>(
        &self,
        netns: Option<std::path::PathBuf>,
        call: impl FnOnce(&mut dyn Firewall) -> Result<T, KernelError> + Send + 'static,
    ) -> Result<T, KernelError> {
        self.call(move |fw| match netns {
            None => call(fw),
            Some(path) => {
                fw.enter(&path)?;
                let result = call(fw);
                fw.leave();
                result
            }
        })
        .await
    }

    /// Runs `call` on the worker and waits for its result without blocking the executor.
    pub async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut dyn Firewall) -> Result<T, KernelError> + Send + 'static,
    ) -> Result<T, KernelError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |firewall| {
            let _ = reply.send(call(firewall));
        });
        self.jobs
            .send(job)
            .map_err(|_| KernelError::WorkerStopped)?;
        answer.await.map_err(|_| KernelError::WorkerStopped)?
    }
}
