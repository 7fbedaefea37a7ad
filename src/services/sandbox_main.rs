//! `iclear-sandbox [ADDR] [--delay-ms MIN[-MAX]]`: the loopback sandbox
//! provider (default 127.0.0.1:28817) for the demo, the benchmark and manual
//! testing. `--delay-ms` (or `ICLEAR_SANDBOX_DELAY_MS=MIN[-MAX]`; the option
//! wins) holds every answer back a uniform random time in [MIN, MAX] ms, at
//! most 60000, to model a vendor's latency.

use iclear_services::sandbox::{parse_args, Sandbox};

const USAGE: &str = "usage: iclear-sandbox [ADDR] [--delay-ms MIN[-MAX]]
  ADDR         a loopback address to listen on (default 127.0.0.1:28817)
  --delay-ms   hold every answer back a uniform random MIN..=MAX ms (MAX <= 60000);
               also ICLEAR_SANDBOX_DELAY_MS=MIN[-MAX]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let env = std::env::var("ICLEAR_SANDBOX_DELAY_MS").ok();
    let (addr, options) = parse_args(&args, env.as_deref()).unwrap_or_else(|e| {
        eprintln!("iclear-sandbox: {e}\n{USAGE}");
        std::process::exit(2)
    });
    let server = Sandbox::start_with(&addr, options).unwrap_or_else(|e| {
        eprintln!("iclear-sandbox: {e}");
        std::process::exit(1)
    });
    let (min, max) = options.delay_ms;
    let delay = match (min, max) {
        (0, 0) => "no delay".to_string(),
        (a, b) if a == b => format!("delay {a} ms"),
        (a, b) => format!("delay {a}-{b} ms"),
    };
    eprintln!(
        "iclear-sandbox listening on http://{} ({delay})",
        server.addr()
    );
    loop {
        std::thread::park();
    }
}
