//! `serve_queue` and the chain walk against a hostile driver: a queue that never empties,
//! chains that loop, leave the table, overflow or use indirect tables, and what
//! virtio-queue's own iterator does with them (the reason flint walks chains itself).

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::testing::{write_descriptors, TestQueue, F_INDIRECT, F_NEXT, F_WRITE};
use super::{serve_queue, ChainError, Interrupt, Served};
use crate::devices::irq::IrqLine;

const QSIZE: u16 = 16;
const BUF: u64 = 0x10_0000;
const TABLE: u64 = 0x20_0000;

/// A descriptor as `TestQueue::put_raw` takes it: (addr, len, flags, next).
type RawDesc = (u64, u32, u16, u16);

struct Setup {
    mem: GuestMemoryMmap,
    q: TestQueue,
    queue: Queue,
    interrupt: Interrupt,
}

fn setup(event_idx: bool) -> Setup {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let (q, mut queue) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
    queue.set_event_idx(event_idx);
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Interrupt::new(IrqLine::Fd(irq));
    Setup {
        mem,
        q,
        queue,
        interrupt,
    }
}

/// Serves once; returns the outcome and what the handler saw of each chain (its length).
fn serve(s: &mut Setup) -> (Served, Vec<Result<usize, ChainError>>) {
    serve_with(s, false)
}

/// As `serve`, with VIRTIO_RING_F_INDIRECT_DESC negotiated or not.
fn serve_with(s: &mut Setup, indirect: bool) -> (Served, Vec<Result<usize, ChainError>>) {
    let mut seen = Vec::new();
    let served = serve_queue(&mut s.queue, &s.mem, &s.interrupt, indirect, |descs| {
        seen.push(descs.map(<[Descriptor]>::len));
        0
    });
    (served, seen)
}

/// Writes descriptors (addr, len, flags, next) as a table at `at` in guest memory.
fn write_table(mem: &GuestMemoryMmap, at: u64, descs: &[RawDesc]) {
    write_descriptors(mem, GuestAddress(at), descs);
}

/// Serves one chain made of `ring` (in the ring's table) with indirect tables negotiated, and
/// returns what the handler saw of it: the descriptors' (addr, len, flags).
fn serve_indirect(s: &mut Setup, ring: &[RawDesc]) -> Result<Vec<(u64, u32, u16)>, ChainError> {
    let head = s.q.put_raw(&s.mem, ring);
    s.q.make_available(&s.mem, head);
    let mut seen = Vec::new();
    let served = serve_queue(&mut s.queue, &s.mem, &s.interrupt, true, |descs| {
        seen.push(descs.map(|d| {
            d.iter()
                .map(|d| (d.addr().0, d.len(), d.flags()))
                .collect::<Vec<_>>()
        }));
        0
    });
    assert_eq!(served, Served::Done);
    assert_eq!(seen.len(), 1, "one chain served");
    seen.remove(0)
}

/// What virtio-queue's own iterator yields for the next available chain (the queue is left
/// where it was).
fn virtio_queue_walk(s: &mut Setup) -> Vec<Descriptor> {
    let next = s.queue.next_avail();
    let walked = s.queue.iter(&s.mem).unwrap().next().unwrap().collect();
    s.queue.set_next_avail(next);
    walked
}

#[test]
fn a_driver_that_keeps_reposting_gets_one_batch_per_call() {
    let mut s = setup(true);
    let head = s.q.put_chain(&s.mem, &[(BUF, 64, F_WRITE)]);
    s.q.make_available(&s.mem, head);
    // Each completed chain is made available again at once, as a busy guest with EVENT_IDX
    // does: the ring never empties (a thousand times, so that an unbounded loop ends).
    let (mem, mut posted) = (s.mem.clone(), 1u16);
    let (q, queue, interrupt) = (&s.q, &mut s.queue, &s.interrupt);
    let mut calls = 0usize;
    let mut served = serve_queue(queue, &mem, interrupt, false, |_| {
        calls += 1;
        if posted < 1000 {
            q.put_avail_entry(&mem, posted, head);
            posted += 1;
            q.set_avail_idx(&mem, posted);
        }
        0
    });
    assert!(
        calls <= usize::from(QSIZE),
        "one call served {calls} chains; the bound is a queue size ({QSIZE})"
    );
    assert_eq!(served, Served::More, "work is left and said so");
    // Called again (as the worker thread does), it gets through all of it, a batch at a time.
    let mut rounds = 1;
    while served == Served::More {
        let before = calls;
        served = serve_queue(queue, &mem, interrupt, false, |_| {
            calls += 1;
            if posted < 1000 {
                q.put_avail_entry(&mem, posted, head);
                posted += 1;
                q.set_avail_idx(&mem, posted);
            }
            0
        });
        assert!(calls - before <= usize::from(QSIZE));
        rounds += 1;
    }
    assert_eq!((served, calls), (Served::Done, 1000));
    assert!(rounds >= 1000 / usize::from(QSIZE));
}

#[test]
fn one_call_reads_a_bounded_number_of_descriptors() {
    let mut s = setup(false);
    // One chain through the whole table, made available a queue's worth of times: every
    // entry costs a queue size of descriptor reads.
    let descs: Vec<_> = (0..QSIZE)
        .map(|i| (BUF + u64::from(i) * 64, 64, F_WRITE))
        .collect();
    let head = s.q.put_chain(&s.mem, &descs);
    for _ in 0..QSIZE {
        s.q.make_available(&s.mem, head);
    }
    let (served, seen) = serve(&mut s);
    assert_eq!(served, Served::More);
    assert!(
        seen.len() <= 2,
        "{} chains of {QSIZE} descriptors in one call: more than 3 queue sizes of reads",
        seen.len()
    );
    assert!(seen.iter().all(|c| *c == Ok(16)));
    // The rest comes in later calls.
    let mut total = seen.len();
    loop {
        let (served, seen) = serve(&mut s);
        total += seen.len();
        if served == Served::Done {
            break;
        }
    }
    assert_eq!(total, usize::from(QSIZE));
    assert_eq!(s.q.used_idx(&s.mem), QSIZE);
}

#[test]
fn a_chain_as_long_as_the_queue_is_whole() {
    let mut s = setup(false);
    let descs: Vec<_> = (0..QSIZE).map(|i| (BUF + u64::from(i), 1, 0)).collect();
    let head = s.q.put_chain(&s.mem, &descs);
    s.q.make_available(&s.mem, head);
    let (served, seen) = serve(&mut s);
    assert_eq!(served, Served::Done);
    assert_eq!(seen, vec![Ok(usize::from(QSIZE))]);
}

#[test]
fn broken_chains_are_errors_not_truncated_chains() {
    let n = F_NEXT;
    // (descriptors, the error). Each is also shown to be what virtio-queue's iterator would
    // silently cut short.
    let cases: [(&[RawDesc], ChainError); 4] = [
        // 0 -> 1 -> 0 -> ...
        (
            &[(BUF, 16, n, 1), (BUF, 16, n | F_WRITE, 0)],
            ChainError::TooLong,
        ),
        // The last descriptor points past the table.
        (
            &[(BUF, 16, n, 1), (BUF, 1, F_WRITE | n, QSIZE)],
            ChainError::IndexOutOfRange(QSIZE),
        ),
        // 4 GiB and more in all.
        (
            &[(BUF, u32::MAX - 8, n, 1), (BUF, 16, F_WRITE, 0)],
            ChainError::LengthOverflow,
        ),
        // Far out of range.
        (&[(BUF, 16, n, 0xffff)], ChainError::IndexOutOfRange(0xffff)),
    ];
    for (descs, err) in cases {
        let mut s = setup(false);
        let head = s.q.put_raw(&s.mem, descs);
        s.q.make_available(&s.mem, head);
        // virtio-queue's walk ends early without saying so.
        let walked = virtio_queue_walk(&mut s);
        assert!(
            walked.last().is_none_or(|d| d.has_next()),
            "{descs:?}: virtio-queue's iterator stops mid-chain"
        );
        let (served, seen) = serve(&mut s);
        assert_eq!(served, Served::Done);
        assert_eq!(seen, vec![Err(err)], "{descs:?}");
        assert_eq!(s.q.used(&s.mem, 0), (u32::from(head), 0));
    }
}

#[test]
fn indirect_descriptors_are_not_followed_unless_negotiated() {
    let mut s = setup(false);
    // A table of two descriptors elsewhere in RAM, and a chain that points at it.
    write_table(
        &s.mem,
        TABLE,
        &[(BUF, 16, F_NEXT, 1), (BUF + 0x100, 1, F_WRITE, 0)],
    );
    let head = s.q.put_raw(&s.mem, &[(TABLE, 32, F_INDIRECT, 0)]);
    s.q.make_available(&s.mem, head);
    // virtio-queue 0.18's iterator follows it whatever was negotiated.
    let walked = virtio_queue_walk(&mut s);
    assert_eq!(walked.len(), 2, "virtio-queue follows the indirect table");
    let (served, seen) = serve(&mut s);
    assert_eq!(served, Served::Done);
    assert_eq!(seen, vec![Err(ChainError::Indirect)]);
    // Also in the middle of a chain.
    let mut s = setup(false);
    let head =
        s.q.put_raw(&s.mem, &[(BUF, 16, F_NEXT, 1), (TABLE, 32, F_INDIRECT, 0)]);
    s.q.make_available(&s.mem, head);
    assert_eq!(serve(&mut s).1, vec![Err(ChainError::Indirect)]);
}

#[test]
fn a_bad_avail_index_or_head_breaks_the_queue() {
    let mut s = setup(true);
    s.q.set_avail_idx(&s.mem, QSIZE + 1);
    assert_eq!(serve(&mut s).0, Served::Broken);
    // A head index outside the table cannot go back in the used ring.
    let mut s = setup(false);
    s.q.make_available(&s.mem, QSIZE);
    let (served, seen) = serve(&mut s);
    assert_eq!(served, Served::Broken);
    assert_eq!(seen, vec![Err(ChainError::IndexOutOfRange(QSIZE))]);
}

#[test]
fn a_served_chain_interrupts_the_driver() {
    // Sanity: a served chain interrupts the driver (without EVENT_IDX, always).
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let (mut q, mut queue) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap())));
    let head = q.put_chain(&mem, &[(BUF, 1, F_WRITE)]);
    q.make_available(&mem, head);
    assert_eq!(
        serve_queue(&mut queue, &mem, &interrupt, false, |_| 1),
        Served::Done
    );
    assert_eq!(irq.read().unwrap(), 1);
}

#[test]
fn an_indirect_table_is_followed_only_when_negotiated_and_only_as_virtio_allows() {
    let table = [
        (BUF, 16, F_NEXT, 1),
        (BUF + 0x100, 8, F_NEXT | F_WRITE, 2),
        (BUF + 0x200, 1, F_WRITE, 0),
    ];
    let want = vec![
        (BUF, 16, F_NEXT),
        (BUF + 0x100, 8, F_NEXT | F_WRITE),
        (BUF + 0x200, 1, F_WRITE),
    ];
    // A table alone, and after a direct descriptor (virtio: zero or more direct ones, then
    // one indirect); the indirect descriptor's own WRITE flag is ignored.
    let mut s = setup(false);
    write_table(&s.mem, TABLE, &table);
    assert_eq!(
        serve_indirect(&mut s, &[(TABLE, 48, F_INDIRECT | F_WRITE, 0)]),
        Ok(want.clone())
    );
    let mut with_direct = vec![(BUF + 0x300, 4, F_NEXT)];
    with_direct.extend(want.iter().copied());
    let mut s2 = setup(false);
    write_table(&s2.mem, TABLE, &table);
    assert_eq!(
        serve_indirect(
            &mut s2,
            &[(BUF + 0x300, 4, F_NEXT, 1), (TABLE, 48, F_INDIRECT, 0)]
        ),
        Ok(with_direct)
    );
    // The table's entries are chained by NEXT from its first, in any order.
    write_table(
        &s.mem,
        TABLE,
        &[
            (BUF, 16, F_NEXT, 2),
            (BUF + 0x200, 1, F_WRITE, 0),
            (BUF + 0x100, 8, F_NEXT, 1),
        ],
    );
    assert_eq!(
        serve_indirect(&mut s, &[(TABLE, 48, F_INDIRECT, 0)]).map(|d| d.len()),
        Ok(3)
    );

    let bad = |table: &[RawDesc], ring: &[RawDesc]| {
        let mut s = setup(false);
        write_table(&s.mem, TABLE, table);
        serve_indirect(&mut s, ring)
    };
    let one = [(BUF, 16, 0, 0)];
    assert_eq!(
        bad(&one, &[(TABLE, 16, F_INDIRECT, 0)]).map(|d| d.len()),
        Ok(1)
    );
    // INDIRECT with NEXT, a table inside a table, an empty table, a partial descriptor, a table
    // longer than INDIRECT_MAX.
    assert_eq!(
        bad(&one, &[(TABLE, 16, F_INDIRECT | F_NEXT, 1), (BUF, 4, 0, 0)]),
        Err(ChainError::BadIndirect)
    );
    assert_eq!(
        bad(&[(TABLE, 16, F_INDIRECT, 0)], &[(TABLE, 16, F_INDIRECT, 0)]),
        Err(ChainError::BadIndirect)
    );
    assert_eq!(
        bad(&one, &[(TABLE, 0, F_INDIRECT, 0)]),
        Err(ChainError::BadIndirect)
    );
    assert_eq!(
        bad(&one, &[(TABLE, 20, F_INDIRECT, 0)]),
        Err(ChainError::BadIndirect)
    );
    let max = super::INDIRECT_MAX * 16;
    assert_eq!(
        bad(&one, &[(TABLE, max, F_INDIRECT, 0)]).map(|d| d.len()),
        Ok(1)
    );
    assert_eq!(
        bad(&one, &[(TABLE, max + 16, F_INDIRECT, 0)]),
        Err(ChainError::BadIndirect)
    );
    // Inside the table: a loop, a next beyond the table, a table outside guest memory.
    assert_eq!(
        bad(
            &[(BUF, 16, F_NEXT, 1), (BUF, 16, F_NEXT, 0)],
            &[(TABLE, 32, F_INDIRECT, 0)]
        ),
        Err(ChainError::TooLong)
    );
    assert_eq!(
        bad(
            &[(BUF, 16, F_NEXT, 2), (BUF, 16, 0, 0), (BUF, 16, 0, 0)],
            &[(TABLE, 32, F_INDIRECT, 0)]
        ),
        Err(ChainError::IndexOutOfRange(2))
    );
    assert_eq!(
        bad(&one, &[(4 << 20, 16, F_INDIRECT, 0)]),
        Err(ChainError::Unreadable)
    );
    assert_eq!(
        bad(&one, &[((4 << 20) - 8, 16, F_INDIRECT, 0)]),
        Err(ChainError::Unreadable)
    );
    // Lengths still add up within 4 GiB across the ring and the table.
    assert_eq!(
        bad(
            &[(BUF, u32::MAX, 0, 0)],
            &[(BUF, 1, F_NEXT, 1), (TABLE, 16, F_INDIRECT, 0)]
        ),
        Err(ChainError::LengthOverflow)
    );
}

#[test]
fn a_long_indirect_table_is_read_once_and_the_budget_ends_the_call() {
    // Tables of INDIRECT_MAX descriptors, a queue's worth of them: the walk reads each table
    // once, and one call stops at its budget (twice the queue size of descriptors) with work
    // left, instead of reading every table.
    let mut s = setup(false);
    let n = u16::try_from(super::INDIRECT_MAX).unwrap();
    let table: Vec<RawDesc> = (0..n)
        .map(|i| (BUF, 1, if i + 1 < n { F_NEXT } else { 0 }, i + 1))
        .collect();
    write_table(&s.mem, TABLE, &table);
    for _ in 0..QSIZE {
        let head =
            s.q.put_raw(&s.mem, &[(TABLE, u32::from(n) * 16, F_INDIRECT, 0)]);
        s.q.make_available(&s.mem, head);
    }
    let (served, seen) = serve_with(&mut s, true);
    assert_eq!(served, Served::More);
    assert_eq!(
        seen,
        vec![Ok(usize::from(n))],
        "one table spends the budget"
    );
    let mut calls = 1;
    while serve_with(&mut s, true).0 == Served::More {
        calls += 1;
        assert!(
            calls <= usize::from(QSIZE),
            "each call serves at least one chain"
        );
    }
    assert_eq!(calls, usize::from(QSIZE));
}
