//! Windows: starting brokerd at logon through the user's Run key,
//! `HKCU\Software\Microsoft\Windows\CurrentVersion\Run`, value `token-broker`.
//!
//! Why the Run key and not a scheduled task: it is per user and needs no administrator, it
//! starts brokerd in the user's own logon session (where Credential Manager is the user's),
//! and it is one registry value to write, read back and remove. brokerd is a windowless
//! program, so nothing flashes at logon. A logon task would add restart-on-failure, which
//! start on demand already covers: the next kubectl run starts brokerd again.

use std::io;

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_SUCCESS};

use crate::pipe::wide;
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_CURRENT_USER, KEY_READ, KEY_SET_VALUE, REG_SZ, RegCloseKey, RegDeleteValueW,
    RegOpenKeyExW, RegQueryValueExW, RegSetValueExW,
};

/// The key, under HKEY_CURRENT_USER.
pub const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
/// The value token-broker writes there.
pub const VALUE: &str = "token-broker";
/// The longest command read back: a path and a few flags.
const MOST_BYTES: usize = 8 * 1024;

/// The command line that starts brokerd at logon.
pub fn command(brokerd: &std::path::Path) -> String {
    format!("\"{}\"", brokerd.display())
}

struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: opened by `open` and closed once, here.
        unsafe { RegCloseKey(self.0) };
    }
}

fn open(access: u32) -> io::Result<Key> {
    let name = wide(RUN_KEY);
    let mut key: HKEY = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; `key` is valid for writes.
    let status =
        unsafe { RegOpenKeyExW(HKEY_CURRENT_USER, name.as_ptr(), 0, access, &raw mut key) };
    check(status)?;
    Ok(Key(key))
}

/// Writes the value: brokerd starts at the next logon.
pub fn install(command: &str) -> io::Result<()> {
    let key = open(KEY_SET_VALUE)?;
    let name = wide(VALUE);
    let data = wide(command);
    let bytes = u32::try_from(data.len() * 2)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "command too long"))?;
    // SAFETY: `name` is NUL-terminated; `data` is a NUL-terminated UTF-16 string of `bytes`
    // bytes, as REG_SZ requires.
    let status =
        unsafe { RegSetValueExW(key.0, name.as_ptr(), 0, REG_SZ, data.as_ptr().cast(), bytes) };
    check(status)
}

/// Removes the value; false when it was not there.
pub fn uninstall() -> io::Result<bool> {
    let key = open(KEY_SET_VALUE)?;
    let name = wide(VALUE);
    // SAFETY: `name` is NUL-terminated.
    match unsafe { RegDeleteValueW(key.0, name.as_ptr()) } {
        ERROR_FILE_NOT_FOUND => Ok(false),
        status => check(status).map(|()| true),
    }
}

/// The command the value holds, if there is one.
pub fn installed() -> io::Result<Option<String>> {
    let key = match open(KEY_READ) {
        Ok(key) => key,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = wide(VALUE);
    let mut data = vec![0u16; MOST_BYTES / 2];
    let mut bytes = MOST_BYTES as u32;
    let mut kind = 0u32;
    // SAFETY: `data` is valid for writes of `bytes` bytes; the others are valid for writes.
    let status = unsafe {
        RegQueryValueExW(
            key.0,
            name.as_ptr(),
            std::ptr::null(),
            &raw mut kind,
            data.as_mut_ptr().cast(),
            &raw mut bytes,
        )
    };
    if status == ERROR_FILE_NOT_FOUND {
        return Ok(None);
    }
    check(status)?;
    let units = (bytes as usize / 2).min(data.len());
    let text = data.get(..units).unwrap_or_default();
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    Ok(Some(String::from_utf16_lossy(
        text.get(..end).unwrap_or_default(),
    )))
}

fn check(status: u32) -> io::Result<()> {
    if status == ERROR_SUCCESS {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(status as i32))
    }
}
