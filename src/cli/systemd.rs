//! systemd's service notification protocol (`Type=notify`): `READY=1` once
//! the listeners are bound, `RELOADING=1` around a SIGHUP, `STOPPING=1` on
//! the way out. Nothing happens without `NOTIFY_SOCKET`.

/// Sends `state` to the service manager, if there is one listening.
pub fn notify(state: &str) {
    #[cfg(target_os = "linux")]
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = send(&socket, state) {
            tracing::warn!(error = %e, state, "could not notify the service manager");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = state;
}

/// Sends `state` to the socket `NOTIFY_SOCKET` names (a path, or `@name`
/// in the abstract namespace).
#[cfg(target_os = "linux")]
fn send(socket_name: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let bytes = socket_name.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket_name))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    use super::*;

    fn received(listener: &UnixDatagram) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn the_state_reaches_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(received(&listener), b"READY=1");

        let name = format!("lmx-notify-test-{}", crate::sys::random_string(8));
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(received(&listener), b"STOPPING=1");
        assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
