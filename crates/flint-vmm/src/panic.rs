//! flint's one policy for panics: **a panic is a flint bug that ends the VM, never a hang.**
//!
//! - [`install_hook`] (called once, by the binary) replaces Rust's multi-line panic report with
//!   a record of where and why the thread panicked.
//! - Every thread flint starts runs its body through [`guard`] (vCPUs, device workers), and the
//!   event loop runs each iteration through it: a caught panic becomes
//!   [`ExitReason::InternalError`](crate::exit::ExitReason::InternalError), so the VM stops, the
//!   terminal is restored and flint exits 1 with one `flint: error: internal error: …` line.
//! - A lock poisoned by a panic is never used again: [`crate::bus::lock`] panics in turn, so the
//!   thread that finds it stops too (the first panic's reason is the one reported).
//! - A panic outside any guard (there should be none) is printed by the hook as one line.
//!
//! Unwinding stays on (no `panic = "abort"`): it is what lets the guards turn a panic into an
//! orderly stop, with the terminal restored and every other thread told to end.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};

thread_local! {
    /// Set while the thread runs inside [`guard`]: the guard reports the panic, not the hook.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// What the hook recorded about this thread's last panic, for its guard.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic hook (see the module docs).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = describe(info);
        if GUARDED.with(Cell::get) {
            LAST.with(|l| *l.borrow_mut() = Some(what));
        } else {
            eprintln!("flint: error: internal error: {what}");
        }
    }));
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let msg = payload_text(info.payload());
    match info.location() {
        Some(l) => format!(
            "thread '{name}' panicked at {}:{}: {msg}",
            l.file(),
            l.line()
        ),
        None => format!("thread '{name}' panicked: {msg}"),
    }
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `f`; a panic inside it comes back as `Err` with where and why it happened (from the
/// hook when installed, else from the payload alone).
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let outer = GUARDED.with(|g| g.replace(true));
    // The closure's state is dropped or abandoned after a panic, never used again: the VM
    // stops. So observing it "broken" is impossible, which is what unwind safety guards.
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|payload| {
        LAST.with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| format!("panicked: {}", payload_text(payload.as_ref())))
    })
}

/// Test support: in debug builds, panics at `point` when `FLINT_TEST_PANIC` names it, so the
/// tests can prove that a panic at each kind of place ends flint with a message and no hang.
/// Release builds compile it to nothing.
#[inline]
#[track_caller]
pub fn test_point(point: &str) {
    #[cfg(debug_assertions)]
    {
        static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let wanted = WANTED.get_or_init(|| std::env::var("FLINT_TEST_PANIC").ok());
        if wanted.as_deref() == Some(point) {
            panic!("FLINT_TEST_PANIC={point}: a deliberate panic for the tests");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_its_message() {
        assert_eq!(guard(|| 7), Ok(7));
        let err = guard(|| -> u8 { panic!("boom {}", 42) }).unwrap_err();
        assert!(err.contains("boom 42"), "{err}");
        // Nested guards restore the outer state.
        let outer = guard(|| {
            let inner = guard(|| panic!("inner"));
            assert!(inner.is_err());
            GUARDED.with(Cell::get)
        });
        assert_eq!(outer, Ok(true));
        assert!(!GUARDED.with(Cell::get));
    }
}
