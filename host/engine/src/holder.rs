//! Lease holder ids, and telling whether a holder on this machine is still alive, so that a
//! restarted process takes over the leases of the one that was killed at once instead of
//! waiting for them to expire.

/// `hostname/pid/random`.
pub fn new_holder_id() -> String {
    format!(
        "{}/{}/{}",
        hostname(),
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).replace('/', "_")
}

/// True when `holder` names a process on this machine that no longer exists.
pub fn is_dead_local(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
