//! `iclear-sandbox [ADDR]`: the loopback sandbox provider (default
//! 127.0.0.1:28817) for the demo and manual testing.

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:28817".into());
    let server = iclear_services::sandbox::Sandbox::start(&addr).unwrap_or_else(|e| {
        eprintln!("iclear-sandbox: {e}");
        std::process::exit(1)
    });
    eprintln!("iclear-sandbox listening on http://{}", server.addr());
    loop {
        std::thread::park();
    }
}
