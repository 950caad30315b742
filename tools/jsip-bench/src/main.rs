//! `jsip-bench`: a load generator for JSIP over WebSocket, as sipp is for SIP.
//!
//! Scenarios (one module each): `message` (MESSAGE round trips, closed or open loop),
//! `call` (INVITE/200/ACK, hold, BYE/200), `chat` (room fan-out through the `chatroom`
//! plugin), `connect` (a connection storm), `idle` (held connections), and
//! `echo-server`, the raw tokio-tungstenite echo every jsipd figure is divided by. Against
//! the echo server, `message` takes its own echoed request as the answer, so the
//! baseline and jsipd run the exact same client code.
//!
//! `report.rs` counts (errors by JSIP code and by transport), keeps latency in HDR
//! histograms, prints the progress line and the summary (`--json` for scripts).

mod call;
mod chat;
mod conn;
mod jsip;
mod message;
mod report;
mod servers;
mod storm;

const USAGE: &str = "\
Usage: jsip-bench <scenario> --url WS_URL [options]
       jsip-bench echo-server --listen ADDR

Scenarios:
  message      MESSAGE -> 200 round trips
  call         INVITE/200/ACK, hold, BYE/200 (one completed call is one unit)
  chat         N members in a chatroom room; each MESSAGE is relayed to the others
  connect      connection storm: open, close, repeat; counts handshakes per second
  idle         open N connections and hold them
  echo-server  raw WebSocket echo (the baseline)

Options:
  --url URL          ws://HOST:PORT/rtc or wss://... (userid is added per connection)
  --ca FILE          PEM certificate(s) to trust for wss:// (e.g. jsipd's certs/jsipd.crt)
  --connections N    sockets (chat: members; connect: parallel openers) (default 16)
  --depth D          requests (calls) in flight per socket, closed loop (default 1)
  --rate R           open loop: R requests per second over all sockets, sent on
                     schedule whatever the answers do
  --duration SECS    measured seconds (default 10; idle: how long to hold, 0 = forever)
  --warmup SECS      seconds before measuring (default 2)
  --messages N       message: stop after N answered round trips, counted from the
                     first (no warm-up; --duration is then only a limit): a fixed
                     amount of work, for instruction counts (bench/callgrind.sh)
  --timeout SECS     an answer later than this is a 'timeout' error (default 5)
  --uri URI          Request-URI (default bench@echo: the echo SLP by host label;
                     chat: room:NAME@REALM)
  --router ROUTER    Router of each request (e.g. 'jsipd.test;type=echo')
  --hold MS          call: time between ACK and BYE (default 0)
  --body JSON        message: each MESSAGE's Body (default \"ping\"), e.g. HID events
                     '[{\"key\":\"KeyA\",\"down\":true},{\"key\":\"KeyA\",\"down\":false}]'
  --content-type T   message: each MESSAGE's Content-Type (e.g. hid)
  --userid PREFIX    userid prefix; connection n is PREFIXn (default bench)
  --json             print the summary as one JSON object: throughput, latency_ms,
                     errors {total, by_code, transport}, client_cpu_s, ...
  --listen ADDR      echo-server: address to listen on (default 127.0.0.1:0)
  --read-buffer N    echo-server: its WebSocket read buffer in bytes (default 4096,
                     the baseline of BENCHMARKS.md; jsipd's sockets use 512)
";

/// Every option; scenarios read what they need.
pub struct Args {
    scenario: String,
    pub url: String,
    ca: Option<String>,
    listen: String,
    read_buffer: usize,
    pub connections: usize,
    pub depth: usize,
    pub rate: Option<f64>,
    pub duration: f64,
    pub warmup: f64,
    pub messages: Option<u64>,
    pub timeout: f64,
    pub uri: String,
    pub router: Option<String>,
    pub hold_ms: u64,
    pub body: serde_json::Value,
    pub content_type: Option<String>,
    pub userid: String,
    pub json: bool,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        scenario: String::new(),
        url: String::new(),
        ca: None,
        listen: "127.0.0.1:0".into(),
        read_buffer: 4096,
        connections: 16,
        depth: 1,
        rate: None,
        duration: 10.0,
        warmup: 2.0,
        messages: None,
        timeout: 5.0,
        uri: "bench@echo".into(),
        router: None,
        hold_ms: 0,
        body: serde_json::Value::from("ping"),
        content_type: None,
        userid: "bench".into(),
        json: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("url") => a.url = p.value()?.string()?,
            Long("ca") => a.ca = Some(p.value()?.string()?),
            Long("listen") => a.listen = p.value()?.string()?,
            Long("read-buffer") => a.read_buffer = p.value()?.parse()?,
            Long("connections") => a.connections = p.value()?.parse()?,
            Long("depth") => a.depth = p.value()?.parse()?,
            Long("rate") => a.rate = Some(p.value()?.parse()?),
            Long("duration") => a.duration = p.value()?.parse()?,
            Long("warmup") => a.warmup = p.value()?.parse()?,
            Long("messages") => a.messages = Some(p.value()?.parse()?),
            Long("timeout") => a.timeout = p.value()?.parse()?,
            Long("uri") => a.uri = p.value()?.string()?,
            Long("router") => a.router = Some(p.value()?.string()?),
            Long("hold") => a.hold_ms = p.value()?.parse()?,
            Long("body") => {
                let text = p.value()?.string()?;
                a.body = serde_json::from_str(&text).map_err(|e| {
                    lexopt::Error::Custom(format!("--body is not JSON: {e}").into())
                })?;
            }
            Long("content-type") => a.content_type = Some(p.value()?.string()?),
            Long("userid") => a.userid = p.value()?.string()?,
            Long("json") => a.json = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if a.scenario.is_empty() => a.scenario = v.string()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

/// Option values that parse but make no sense.
fn check(a: &Args) -> Result<(), String> {
    if a.scenario != "echo-server" && a.url.is_empty() {
        return Err(format!("{} needs --url", a.scenario));
    }
    if a.connections == 0 || a.depth == 0 {
        return Err("--connections and --depth must be at least 1".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number of requests per second".into());
    }
    if !(a.duration >= 0.0 && a.warmup >= 0.0 && a.timeout > 0.0) {
        return Err("--duration, --warmup and --timeout must be positive".into());
    }
    Ok(())
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jsip-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = check(&args) {
        eprintln!("jsip-bench: {e}\n\n{USAGE}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        if args.scenario == "echo-server" {
            return servers::echo_server(&args).await;
        }
        let target = match conn::Target::new(&args.url, args.ca.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("jsip-bench: {e}");
                return 2;
            }
        };
        match args.scenario.as_str() {
            "message" => message::run(&args, &target).await,
            "call" => call::run(&args, &target).await,
            "chat" => chat::run(&args, &target).await,
            "connect" => storm::run(&args, &target).await,
            "idle" => servers::idle(&args, &target).await,
            other => {
                eprintln!("jsip-bench: unknown scenario '{other}'\n\n{USAGE}");
                2
            }
        }
    });
    std::process::exit(code);
}
