//! tokio-client ADDR NAME:PORT [N]: N concurrent HTTP/1.0 GETs on a multi-thread tokio runtime,
//! half to ADDR (a tailnet address), half to NAME (a tailnet name resolved with
//! tokio::net::lookup_host). Prints `ok=K fail=F` and one `err=` line per failure; exit 0 only
//! if every reply is `hello from tailnet`.
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(target: String, by_name: bool) -> Result<(), String> {
    let addr = if by_name {
        let mut it = tokio::net::lookup_host(&target).await.map_err(|e| format!("lookup {target}: {e}"))?;
        it.next().ok_or_else(|| format!("lookup {target}: no address"))?
    } else {
        target.parse().map_err(|e| format!("{target}: {e}"))?
    };
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect {target} ({addr}): {e}"))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.map_err(|e| format!("write {target}: {e}"))?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.map_err(|e| format!("read {target}: {e}"))?;
    let t = String::from_utf8_lossy(&v);
    if t.starts_with("HTTP/1.0 200 OK") && t.ends_with("hello from tailnet\n") {
        Ok(())
    } else {
        Err(format!("{target}: bad reply {t:?}"))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(3).and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut tasks = Vec::new();
    for i in 0..n {
        let by_name = i % 2 == 1;
        let target = if by_name { a[2].clone() } else { a[1].clone() };
        tasks.push(tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), get(target.clone(), by_name)).await {
                Ok(r) => r,
                Err(_) => Err(format!("{target}: timed out")),
            }
        }));
    }
    let (mut ok, mut fail) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                fail += 1;
                println!("err={e}");
            }
            Err(e) => {
                fail += 1;
                println!("err=task: {e}");
            }
        }
    }
    println!("ok={ok} fail={fail}");
    std::process::exit(if fail == 0 { 0 } else { 1 });
}
