//! brokerd's named pipe on Windows, as a blocking transport whose every read and write ends by
//! a timeout.
//!
//! A pipe opened for plain blocking I/O has no timeouts at all: a stuck brokerd would hang the
//! shim, and kubectl with it. So the pipe is opened for overlapped I/O, and each read or write
//! is started, waited for at most the time left, and cancelled when that runs out (and waited
//! for again until the cancellation is done, since the OVERLAPPED it writes lives on this
//! stack frame).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_BROKEN_PIPE, ERROR_IO_PENDING, HANDLE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_OVERLAPPED, ReadFile, WriteFile};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE, WaitForSingleObject};

use crate::h2::Transport;

/// A connected pipe to brokerd.
pub struct Pipe {
    file: File,
    /// Signalled when the I/O in flight completes (manual reset: ReadFile and WriteFile reset
    /// it when they start).
    event: HANDLE,
    timeout: Cell<Option<Duration>>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: the event was created by `open` and is closed once, here.
        unsafe { CloseHandle(self.event) };
    }
}

/// Opens the pipe at `path`; while every instance is busy (brokerd between two accepts), tries
/// again until `deadline`. Nothing is sent: the caller checks the server first.
pub fn open(path: &Path, deadline: Instant) -> io::Result<Pipe> {
    let file = loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(FILE_FLAG_OVERLAPPED)
            .open(path)
        {
            Ok(file) => break file,
            Err(e) if broker_proto::pipe::is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(broker_proto::pipe::BUSY_PAUSE);
            }
            Err(e) => return Err(e),
        }
    };
    // SAFETY: no security attributes, manual reset, initially unset, unnamed.
    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Pipe {
        file,
        event,
        timeout: Cell::new(None),
    })
}

impl Pipe {
    pub fn raw_handle(&self) -> std::os::windows::io::RawHandle {
        self.file.as_raw_handle()
    }

    /// Runs one overlapped operation `start` and waits for it, at most the timeout.
    fn complete(&self, start: impl FnOnce(HANDLE, *mut OVERLAPPED) -> i32) -> io::Result<usize> {
        let handle = self.file.as_raw_handle() as HANDLE;
        // SAFETY: OVERLAPPED is plain data, valid all zeroes.
        let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
        overlapped.hEvent = self.event;
        if start(handle, &raw mut overlapped) == 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
                return Err(error);
            }
            let millis = match self.timeout.get() {
                // INFINITE is u32::MAX: anything longer than 49 days is cut to just below.
                Some(timeout) => u32::try_from(timeout.as_millis()).unwrap_or(INFINITE - 1),
                None => INFINITE,
            };
            // SAFETY: the event is live for the life of `self`.
            if unsafe { WaitForSingleObject(self.event, millis) } != WAIT_OBJECT_0 {
                let mut moved = 0u32;
                // SAFETY: `overlapped` is the one passed to `start` and lives until the
                // cancelled operation has completed, which the blocking wait ensures.
                unsafe {
                    CancelIoEx(handle, &raw const overlapped);
                    GetOverlappedResult(handle, &raw const overlapped, &raw mut moved, 1);
                }
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        let mut moved = 0u32;
        // SAFETY: the operation has completed (or completed at once); `moved` is valid for
        // writes.
        if unsafe { GetOverlappedResult(handle, &raw const overlapped, &raw mut moved, 1) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(moved as usize)
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let ptr = buf.as_mut_ptr();
        // SAFETY: `ptr` is valid for writes of `len` bytes until the operation completes,
        // which `complete` waits for before it returns, whatever happens.
        let done = self.complete(|handle, overlapped| unsafe {
            ReadFile(handle, ptr, len, std::ptr::null_mut(), overlapped)
        });
        match done {
            // brokerd closed its end: the end of the stream.
            Err(e) if e.raw_os_error() == Some(ERROR_BROKEN_PIPE as i32) => Ok(0),
            other => other,
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let ptr = buf.as_ptr();
        // SAFETY: `ptr` is valid for reads of `len` bytes until the operation completes,
        // which `complete` waits for.
        self.complete(|handle, overlapped| unsafe {
            WriteFile(handle, ptr, len, std::ptr::null_mut(), overlapped)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Pipe {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.timeout.set(Some(timeout));
        Ok(())
    }
}
