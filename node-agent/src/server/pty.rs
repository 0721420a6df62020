//! A pseudo-terminal for `exec --tty`: the command gets the terminal side as its stdin,
//! stdout and stderr; the session reads and writes the controller side without
//! blocking a thread.
//!
//! Both sides are opened close-on-exec (the command's copies are the ones its stdio is
//! set to), so no other process inherits them. When the command and everything it
//! started have closed the terminal side, reading the controller side fails with EIO:
//! that is its end of file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;

use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;

/// A newly opened pseudo-terminal.
pub struct Pty {
    controller: OwnedFd,
    terminal: OwnedFd,
}

/// The three stdio handles for the command, each a copy of the terminal side.
pub struct PtyStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Pty {
    /// Opens a pseudo-terminal.
    ///
    /// # Errors
    /// The system has no free pseudo-terminal or no `/dev/ptmx`.
    pub fn open() -> io::Result<Pty> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let controller = rustix::pty::openpt(flags)?;
        rustix::pty::grantpt(&controller)?;
        rustix::pty::unlockpt(&controller)?;
        let terminal = rustix::pty::ioctl_tiocgptpeer(&controller, flags)?;
        Ok(Pty {
            controller,
            terminal,
        })
    }

    /// Handles for the command's stdin, stdout and stderr.
    ///
    /// # Errors
    /// Duplicating the file descriptor failed.
    pub fn stdio(&self) -> io::Result<PtyStdio> {
        Ok(PtyStdio {
            stdin: Stdio::from(self.terminal.try_clone()?),
            stdout: Stdio::from(self.terminal.try_clone()?),
            stderr: Stdio::from(self.terminal.try_clone()?),
        })
    }

    /// Keeps only the controller side (call once the command is spawned and its stdio
    /// handles are dropped, so that EOF comes when the command's side closes).
    ///
    /// # Errors
    /// It cannot be made non-blocking or registered with the runtime.
    pub fn into_controller(self) -> io::Result<Controller> {
        drop(self.terminal);
        rustix::io::ioctl_fionbio(&self.controller, true)?;
        // Tokio deprecates the safe `new` for its unsafe `register`, because a type
        // could return a different raw fd over time. A `File` owns one fd for its whole
        // life, which is exactly `register`'s safety condition; unsafe code is denied in
        // this workspace, so the safe constructor it is.
        #[allow(deprecated)]
        let fd = AsyncFd::new(File::from(self.controller))?;
        Ok(Controller(fd))
    }
}

/// The controller side of a pseudo-terminal, for async reads and writes.
pub struct Controller(AsyncFd<File>);

impl Controller {
    /// Reads what the command wrote; `Ok(0)` once its side is closed.
    ///
    /// # Errors
    /// Reading failed other than by the terminal side closing.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|f| f.get_ref().read(buf)) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Ok(0)
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as typed input.
    ///
    /// # Errors
    /// Writing failed.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's size in characters.
    ///
    /// # Errors
    /// The ioctl failed.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.0.get_ref(), size)?;
        Ok(())
    }

    /// The terminal's size in characters (columns, rows).
    ///
    /// # Errors
    /// The ioctl failed.
    pub fn size(&self) -> io::Result<(u16, u16)> {
        let w = rustix::termios::tcgetwinsize(self.0.get_ref())?;
        Ok((w.ws_col, w.ws_row))
    }
}
