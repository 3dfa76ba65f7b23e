//! Raw mode for an interactive console: keys go to the guest as typed (Ctrl-C included); the
//! saved settings come back when the guard drops, on every exit path that unwinds. And a
//! terminal's size.

use std::io;
use std::os::fd::RawFd;

/// `fd`'s window size as (rows, columns); None if it is no terminal.
pub fn size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given, or fails.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } < 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches `fd` to raw mode if it is a terminal; `None` for pipes and files. Output
    /// post-processing stays on, so flint's own stderr lines still start at column 0.
    pub fn enable_if_tty(fd: RawFd) -> io::Result<Option<RawTerminal>> {
        Self::enable(fd, true)
    }

    /// Raw mode in both directions: for a container's terminal, where the guest's tty does
    /// all the processing (a second ONLCR would turn its "\r\n" into "\r\r\n").
    pub fn enable_fully_if_tty(fd: RawFd) -> io::Result<Option<RawTerminal>> {
        Self::enable(fd, false)
    }

    fn enable(fd: RawFd, keep_output_processing: bool) -> io::Result<Option<RawTerminal>> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios for the call to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only modifies the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        if keep_output_processing {
            raw.c_oflag |= libc::OPOST | libc::ONLCR;
        }
        // SAFETY: `raw` is a valid, fully initialised termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(RawTerminal { fd, saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from this same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}
