//! The queue side of each virtio device and the thread it runs on.
//!
//! [`DeviceQueues`] is shared by a device's transport and its worker thread. The transport
//! (on a vCPU, when the driver writes the status register) puts the device's [`QueueWorker`] in
//! it at DRIVER_OK and takes it out at reset; the worker thread ([`spawn`]) waits on the
//! queue notifications and backend descriptors and runs the worker. The only lock between them
//! is the worker slot, taken by a vCPU at activation and reset alone, and a reset does wait for
//! the batch in flight: the driver may reuse the rings' memory once the reset is done. A batch
//! is bounded (see [`super::Budget`]): a queue or backend with work left after one is served
//! again through an eventfd, behind whatever else is waiting (the stop event, other queues),
//! so no driver keeps the thread, or a vCPU resetting the device, in one call.
//! A worker that finds a queue broken sets DEVICE_NEEDS_RESET here, without the transport's
//! lock, and tells the driver with a configuration-change interrupt.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::EventFd;

use super::{Interrupt, QueueWorker, Served, INT_CONFIG_CHANGE};
use crate::bus::lock;
use crate::exit::{error_chain, ExitEvent, ExitReason};
use crate::sandbox::seccomp::{Filters, ThreadKind};

pub struct DeviceQueues {
    worker: Mutex<Option<Box<dyn QueueWorker>>>,
    needs_reset: AtomicBool,
    /// A reset waits for the worker slot: the worker starts no new batch meanwhile.
    resetting: AtomicBool,
    interrupt: Arc<Interrupt>,
}

impl DeviceQueues {
    pub fn new(interrupt: Arc<Interrupt>) -> Self {
        DeviceQueues {
            worker: Mutex::new(None),
            needs_reset: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
            interrupt,
        }
    }

    /// The driver set DRIVER_OK: `worker` serves the queues from now on.
    pub fn activate(&self, worker: Box<dyn QueueWorker>) {
        *lock(&self.worker) = Some(worker);
    }

    /// The driver reset the device: the worker is dropped once its batch in flight is done.
    pub fn deactivate(&self) {
        // However the lock is handed over, the reset waits for that one batch only.
        self.resetting.store(true, Ordering::Release);
        let old = lock(&self.worker).take();
        self.needs_reset.store(false, Ordering::Release);
        self.resetting.store(false, Ordering::Release);
        drop(old);
    }

    /// Holds the worker slot: no batch runs until the guard drops (a snapshot holds every
    /// device's while it reads queue state and guest memory). Waits for a batch in flight.
    pub fn hold(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn QueueWorker>>> {
        lock(&self.worker)
    }

    /// A snapshot said the driver's queues were broken.
    pub fn restore_needs_reset(&self, needs_reset: bool) {
        self.needs_reset.store(needs_reset, Ordering::Release);
    }

    /// Whether a worker found the driver's queues broken since the last reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// Runs `f` on the worker if there is one and the device is still usable; a
    /// [`Served::Broken`] from it marks the device as needing a reset (while the slot is held,
    /// so a reset that comes after cannot be undone by it). Returns whether `f` has more to do.
    fn serve(&self, f: impl FnOnce(&mut dyn QueueWorker) -> Served) -> bool {
        if self.resetting.load(Ordering::Acquire) {
            return false;
        }
        let mut slot = lock(&self.worker);
        let Some(worker) = slot.as_mut() else {
            return false;
        };
        if self.needs_reset() {
            return false;
        }
        match f(worker.as_mut()) {
            Served::Done => false,
            Served::More => true,
            Served::Broken => {
                self.needs_reset.store(true, Ordering::Release);
                self.interrupt.trigger(INT_CONFIG_CHANGE);
                false
            }
        }
    }

    /// Queue `index` was notified. Returns whether one batch did not finish the work.
    pub fn process_queue(&self, index: usize) -> bool {
        crate::panic::test_point("worker");
        self.serve(|w| w.process_queue(index))
    }

    /// Backend descriptor `index` is readable. Returns as `process_queue` does.
    pub fn process_backend(&self, index: usize) -> bool {
        self.serve(|w| w.process_backend(index))
    }

    /// The backend descriptors of the active worker, and whether each is wanted now (none
    /// while the device is inactive or needs a reset).
    fn backends(&self) -> Vec<(RawFd, bool)> {
        let slot = lock(&self.worker);
        let usable = !self.needs_reset();
        slot.as_ref().map_or_else(Vec::new, |w| {
            w.backend_fds()
                .into_iter()
                .enumerate()
                .map(|(i, fd)| (fd, usable && w.backend_wanted(i)))
                .collect()
        })
    }
}

/// Event data for backend descriptor `i` is `BACKEND_TAG + i`; queue `i` is `i`.
const BACKEND_TAG: u32 = 1 << 16;
/// Event data for the stop eventfd.
const STOP_TAG: u32 = u32::MAX;
/// Event data for the eventfd that brings back backends with more to do.
const AGAIN_TAG: u32 = u32::MAX - 1;

/// The worker thread's one subscriber: queue eventfds, backend descriptors, and stop.
struct QueueEvents {
    queues: Arc<DeviceQueues>,
    evts: Vec<EventFd>,
    stop: EventFd,
    stopped: bool,
    /// Written when a backend stopped at its batch bound with work left (its descriptor may no
    /// longer be readable), to serve it again after the other events.
    again: EventFd,
    /// The backends to serve again.
    backends_again: Vec<usize>,
    /// Backend descriptors being watched now.
    watching: Vec<RawFd>,
}

impl QueueEvents {
    /// Serves backend `i`; one with work left is brought back through `again`.
    fn backend(&mut self, i: usize) {
        if self.queues.process_backend(i) && !self.backends_again.contains(&i) {
            self.backends_again.push(i);
            let _ = self.again.write(1);
        }
    }

    /// Starts or stops watching each backend as the worker wants.
    fn sync_backends(&mut self, ops: &mut EventOps) {
        let backends = self.queues.backends();
        let wanted = |fd: RawFd| backends.iter().any(|&(f, w)| f == fd && w);
        self.watching.retain(|&fd| {
            if wanted(fd) {
                return true;
            }
            // Kept in the list if epoll would not let go of it, to try again next time.
            ops.remove(Events::with_data_raw(fd, 0, EventSet::IN))
                .is_err()
        });
        for (i, &(fd, w)) in backends.iter().enumerate() {
            let Ok(tag) = u32::try_from(i).map(|i| BACKEND_TAG + i) else {
                continue;
            };
            if w && !self.watching.contains(&fd)
                && ops
                    .add(Events::with_data_raw(fd, tag, EventSet::IN))
                    .is_ok()
            {
                self.watching.push(fd);
            }
        }
    }
}

impl MutEventSubscriber for QueueEvents {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.evts.iter().enumerate() {
            let Ok(tag) = u32::try_from(i) else { continue };
            // A queue we cannot watch is a device that never answers; the guest driver times
            // out on it rather than flint failing: say so.
            if let Err(e) = ops.add(Events::with_data(evt, tag, EventSet::IN)) {
                eprintln!("flint: cannot watch virtio queue {i}: {e:?}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.stop, STOP_TAG, EventSet::IN)) {
            // Without it the thread cannot be stopped; process exit still ends it.
            eprintln!("flint: cannot watch a device worker's stop event: {e:?}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.again, AGAIN_TAG, EventSet::IN)) {
            // Backends with more to do then wait for their descriptor to become readable.
            eprintln!("flint: cannot watch a device worker's re-arm event: {e:?}");
        }
        self.sync_backends(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        if data == STOP_TAG {
            self.stopped = true;
            return;
        }
        if data == AGAIN_TAG {
            let _ = self.again.read();
            for i in std::mem::take(&mut self.backends_again) {
                self.backend(i);
            }
        } else if data >= BACKEND_TAG {
            self.backend((data - BACKEND_TAG) as usize);
        } else if let Some(evt) = self.evts.get(data as usize) {
            let _ = evt.read();
            // One batch at a time: a queue with work left is notified again by its own
            // eventfd, behind the events already waiting (stop, a reset, other queues).
            if self.queues.process_queue(data as usize) {
                let _ = evt.write(1);
            }
        }
        self.sync_backends(ops);
    }
}

/// A running device worker thread.
pub struct WorkerThread {
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl WorkerThread {
    /// Tells the thread to stop and waits for it.
    pub fn stop(self) {
        // A full counter still wakes the thread; nothing else can fail here.
        let _ = self.stop.write(1);
        let _ = self.handle.join();
    }
}

/// Starts device `name`'s worker thread (`flint-NAME`), serving `queues` on notifications from
/// `queue_evts`, under `kind`'s seccomp filter (a device worker's, or the vsock worker's). A
/// panic or an event-loop failure in it ends the VM through `exit`.
pub fn spawn(
    name: &str,
    queues: Arc<DeviceQueues>,
    queue_evts: &[EventFd],
    exit: Arc<ExitEvent>,
    filters: Filters,
    kind: ThreadKind,
) -> std::io::Result<WorkerThread> {
    let evts = queue_evts
        .iter()
        .map(EventFd::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let events = QueueEvents {
        queues,
        evts,
        stop: stop.try_clone()?,
        stopped: false,
        again: EventFd::new(libc::EFD_NONBLOCK)?,
        backends_again: Vec::new(),
        watching: Vec::new(),
    };
    let thread_name = format!("flint-{name}");
    let handle = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let outcome = crate::panic::guard(|| run(events, &filters, kind, &thread_name))
                .unwrap_or_else(|what| Err(ExitReason::InternalError(what)));
            if let Err(reason) = outcome {
                exit.request(reason);
            }
        })?;
    Ok(WorkerThread { stop, handle })
}

/// The worker thread's loop: set up its event loop, install its seccomp filter, then serve
/// events until told to stop.
fn run(
    events: QueueEvents,
    filters: &Filters,
    kind: ThreadKind,
    name: &str,
) -> Result<(), ExitReason> {
    let failed = |e| ExitReason::VcpuFailure(format!("a device worker's event loop failed: {e:?}"));
    let mut em = EventManager::<Arc<Mutex<QueueEvents>>>::new().map_err(failed)?;
    let events = Arc::new(Mutex::new(events));
    em.add_subscriber(events.clone());
    filters
        .apply(kind, name)
        .map_err(|e| ExitReason::VcpuFailure(error_chain(&e)))?;
    while !lock(&events).stopped {
        em.run().map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::devices::irq::IrqLine;

    /// A worker that has work left (`More`) for its first `more` calls, or forever (`None`),
    /// on its queue and on its backend, an eventfd it drains on each call.
    struct Busy {
        calls: Arc<AtomicUsize>,
        more: Option<usize>,
        backend: Arc<EventFd>,
    }

    impl Busy {
        fn call(&mut self) -> Served {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            match self.more {
                Some(more) if n >= more => Served::Done,
                _ => Served::More,
            }
        }
    }

    impl QueueWorker for Busy {
        fn process_queue(&mut self, _: usize) -> Served {
            self.call()
        }
        fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
            Vec::new()
        }
        fn backend_fds(&self) -> Vec<RawFd> {
            vec![self.backend.as_raw_fd()]
        }
        fn process_backend(&mut self, _: usize) -> Served {
            // Not readable any more: only the worker's own re-arm can bring it back.
            let _ = self.backend.read();
            self.call()
        }
    }

    struct Running {
        queues: Arc<DeviceQueues>,
        kick: EventFd,
        backend: Arc<EventFd>,
        calls: Arc<AtomicUsize>,
        thread: WorkerThread,
        exit: Arc<ExitEvent>,
    }

    fn start(more: Option<usize>) -> Running {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let queues = Arc::new(DeviceQueues::new(Arc::new(Interrupt::new(IrqLine::Fd(
            irq,
        )))));
        let calls = Arc::new(AtomicUsize::new(0));
        let backend = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        queues.activate(Box::new(Busy {
            calls: calls.clone(),
            more,
            backend: backend.clone(),
        }));
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let exit = Arc::new(ExitEvent::new().unwrap());
        let thread = spawn(
            "test",
            queues.clone(),
            std::slice::from_ref(&kick),
            exit.clone(),
            // The filters have their own tests; this one is about the worker's loop.
            Filters::new(crate::sandbox::seccomp::SeccompLevel::Off).unwrap(),
            ThreadKind::DeviceWorker,
        )
        .unwrap();
        Running {
            queues,
            kick,
            backend,
            calls,
            thread,
            exit,
        }
    }

    fn wait_for(calls: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {calls:?} calls, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_queue_with_work_left_is_served_again_without_a_kick() {
        let r = start(Some(5));
        r.kick.write(1).unwrap();
        // One kick: five batches with work left, then the one that finishes.
        wait_for(&r.calls, 6);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.calls.load(Ordering::SeqCst), 6, "no call after Done");
        r.thread.stop();
        assert!(r.exit.reason().is_none());
    }

    #[test]
    fn a_backend_with_work_left_is_served_again_when_no_longer_readable() {
        let r = start(Some(3));
        r.backend.write(1).unwrap();
        wait_for(&r.calls, 4);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.calls.load(Ordering::SeqCst), 4);
        r.thread.stop();
    }

    #[test]
    fn endless_work_holds_off_a_reset_and_stop_by_one_batch_only() {
        let r = start(None);
        r.kick.write(1).unwrap();
        wait_for(&r.calls, 3);
        // A vCPU resetting the device takes the worker slot between two batches.
        let t = Instant::now();
        r.queues.deactivate();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let calls = r.calls.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.calls.load(Ordering::SeqCst), calls, "the worker is gone");
        // The same for stopping the thread while a worker always has more.
        let r2 = start(None);
        r2.kick.write(1).unwrap();
        wait_for(&r2.calls, 3);
        let t = Instant::now();
        r2.thread.stop();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        r.thread.stop();
    }
}
