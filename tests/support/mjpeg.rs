//! An MJPEG viewer for tests: one real HTTP/1.1 connection, the chunked body decoded and
//! split into JPEG parts at the multipart boundary, as a browser's `<img>` does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Mjpeg {
    reader: BufReader<TcpStream>,
    pub headers: Vec<(String, String)>,
    boundary: Vec<u8>,
    /// Decoded body bytes not yet returned as a part.
    body: Vec<u8>,
    ended: bool,
    /// The closing boundary (`--B--`) arrived.
    closed: bool,
}

/// One part of the stream.
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub jpeg: Vec<u8>,
}

impl Mjpeg {
    /// `GET path` and its response head; panics unless it is a 200 multipart stream.
    pub fn open(addr: SocketAddr, path: &str) -> Mjpeg {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        assert!(status.contains(" 200 "), "{status} {headers:?}");
        let ctype = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let boundary = ctype
            .split_once("boundary=")
            .unwrap_or_else(|| panic!("no boundary in {ctype}"))
            .1
            .to_string();
        assert!(ctype.starts_with("multipart/x-mixed-replace"), "{ctype}");
        Mjpeg {
            reader,
            headers,
            boundary: format!("--{boundary}").into_bytes(),
            body: Vec::new(),
            ended: false,
            closed: false,
        }
    }

    /// Reads one more chunk of the body; `false` at its end.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut size = String::new();
        if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
            self.ended = true;
            return false;
        }
        let n = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
        if n == 0 {
            self.ended = true;
            return false;
        }
        let at = self.body.len();
        self.body.resize(at + n, 0);
        self.reader.read_exact(&mut self.body[at..]).unwrap();
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf).unwrap();
        true
    }

    fn find(&self, needle: &[u8], from: usize) -> Option<usize> {
        self.body[from.min(self.body.len())..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    }

    /// The next complete part, or `None` when the stream ended (with the closing
    /// boundary, or cut).
    pub fn next_part(&mut self) -> Option<Part> {
        loop {
            // A part: BOUNDARY\r\n headers \r\n\r\n data, ended by \r\nBOUNDARY.
            if let Some(start) = self.find(&self.boundary, 0) {
                if let Some(head_end) = self.find(b"\r\n\r\n", start) {
                    let body_start = head_end + 4;
                    let mut end_marker = b"\r\n".to_vec();
                    end_marker.extend_from_slice(&self.boundary);
                    if let Some(end) = self.find(&end_marker, body_start) {
                        let head =
                            String::from_utf8_lossy(&self.body[start..head_end]).into_owned();
                        let headers = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        let jpeg = self.body[body_start..end].to_vec();
                        self.body.drain(..end + 2);
                        if jpeg.is_empty()
                            && self.body.starts_with(&[&self.boundary[..], b"--"].concat())
                        {
                            self.closed = true;
                            return None;
                        }
                        return Some(Part { headers, jpeg });
                    }
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Whether the server closed the stream with the closing boundary (`--B--`).
    pub fn closed_cleanly(&mut self) -> bool {
        while self.next_part().is_some() {}
        self.closed
    }
}
