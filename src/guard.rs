//! Third-party code that may panic on hostile input (image decoders,
//! Parquet footers), run so that a panic becomes a value: one bad file is
//! one rejection or one error naming it, never a crashed run.
//!
//! The default panic hook would still print a "thread panicked" banner for
//! a panic that is handled here; a hook installed once stays quiet while a
//! [`catch`] is running on that thread and keeps the message instead.
//! Panics anywhere else print as before.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let msg = match info.payload() {
                    p if p.is::<&str>() => p.downcast_ref::<&str>().map(|s| s.to_string()),
                    p => p.downcast_ref::<String>().cloned(),
                }
                .unwrap_or_else(|| "(no message)".into());
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it comes back as `Err(message)`.
///
/// Whatever `f` touched is dropped on the way out, so `f` must own or only
/// read its inputs (hence `AssertUnwindSafe`: nothing half-updated escapes).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = CATCHING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    result.map_err(|_| MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "(no message)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_the_thread_goes_on() {
        assert_eq!(catch(|| 7), Ok(7));
        let err = catch(|| -> u8 { panic!("bad header {}", 3) }).unwrap_err();
        assert!(err.starts_with("bad header 3 at "), "{err}");
        let v: Vec<u8> = vec![];
        #[allow(clippy::useless_vec)]
        let err = catch(|| v[5]).unwrap_err();
        assert!(err.contains("index out of bounds"), "{err}");
        // Nested: the inner catch restores the outer state.
        let outer = catch(|| {
            let inner = catch(|| -> u8 { panic!("inner") });
            assert!(inner.is_err());
            panic!("outer")
        });
        assert!(outer.unwrap_err().starts_with("outer"));
    }
}
