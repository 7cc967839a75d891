//! The two ends of the TCP tests, run in test cgroups: the sockets belong to
//! the cgroup of the process that opens them, so each end is its own process.
//!
//! ```text
//! tcp-peer serve ADDR PORT_FILE        listen on ADDR (port 0: any), write the port
//!                                      to PORT_FILE, then for each connection read
//!                                      to EOF and send as many bytes back
//! tcp-peer connect ADDR N BYTES        N connections, one after another: send BYTES,
//!                                      half-close, read the echo to EOF
//! tcp-peer refused ADDR N              N connects that must each be refused
//! ```

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    thread,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", addr, port_file] => serve(addr, port_file),
        ["connect", addr, n, bytes] => connect(addr, n, bytes),
        ["refused", addr, n] => refused(addr, n),
        _ => Err(
            "usage: tcp-peer serve ADDR PORT_FILE | connect ADDR N BYTES | refused ADDR N".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.parse()
        .map_err(|e| format!("`{addr}` is not an address: {e}"))
}

fn parse_count(text: &str) -> Result<usize> {
    text.parse()
        .map_err(|e| format!("`{text}` is not a count: {e}"))
}

fn serve(addr: &str, port_file: &str) -> Result<()> {
    let listener =
        TcpListener::bind(parse_addr(addr)?).map_err(|e| format!("binding {addr}: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("reading the bound port: {e}"))?
        .port();
    // Written whole, then renamed, so the test never reads half a number.
    let partial = format!("{port_file}.partial");
    std::fs::write(&partial, port.to_string()).map_err(|e| format!("writing {partial}: {e}"))?;
    std::fs::rename(&partial, port_file).map_err(|e| format!("renaming {partial}: {e}"))?;
    for stream in listener.incoming() {
        let stream = stream.map_err(|e| format!("accepting: {e}"))?;
        thread::spawn(move || {
            if let Err(e) = echo(stream) {
                eprintln!("tcp-peer: serving a connection: {e}");
            }
        });
    }
    Ok(())
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut received = Vec::new();
    stream.read_to_end(&mut received)?;
    stream.write_all(&received)?;
    stream.shutdown(Shutdown::Write)
}

fn connect(addr: &str, n: &str, bytes: &str) -> Result<()> {
    let (addr, n, bytes) = (parse_addr(addr)?, parse_count(n)?, parse_count(bytes)?);
    let payload = vec![0x5a; bytes];
    for i in 0..n {
        let mut stream =
            TcpStream::connect(addr).map_err(|e| format!("connect {} to {addr}: {e}", i + 1))?;
        stream
            .write_all(&payload)
            .and_then(|()| stream.shutdown(Shutdown::Write))
            .map_err(|e| format!("sending on connection {}: {e}", i + 1))?;
        let mut echoed = Vec::with_capacity(bytes);
        stream
            .read_to_end(&mut echoed)
            .map_err(|e| format!("reading on connection {}: {e}", i + 1))?;
        if echoed.len() != bytes {
            return Err(format!(
                "connection {}: {} bytes echoed, {bytes} sent",
                i + 1,
                echoed.len()
            ));
        }
    }
    Ok(())
}

fn refused(addr: &str, n: &str) -> Result<()> {
    let (addr, n) = (parse_addr(addr)?, parse_count(n)?);
    for i in 0..n {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(format!("connect {} to {addr}: {e}, not refused", i + 1)),
            Ok(_) => return Err(format!("connect {} to {addr} was accepted", i + 1)),
        }
    }
    Ok(())
}
