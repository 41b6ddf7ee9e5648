//! `archive`: `chat` with the message archive on (whether the server archives is its own
//! configuration), then MAM queries over the filled archives -> queries/s (XEP-0313).
//!
//! Each of the 2P chat accounts pages through its own archive: `<query
//! xmlns='urn:xmpp:mam:2' queryid=...>` with an XEP-0059 `<set><max>N</max><after>LAST</after>`
//! where LAST is the `<last/>` of the previous page's `<fin/>`; after a `<fin
//! complete='true'/>` it starts from the first page again. Every `<result/>` message with the
//! query's `queryid` counts as one archived message returned; a page ends with the IQ
//! result. On a fresh server the first complete pass of every account returns what that
//! account sent or received, so `first_pass_messages` = 2 x sent.

use starling_proto::Attr;
use std::time::Duration;

use minidom::Element;
use starling_client::Client;
use starling_proto::ns;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::chat::{chat, check_pairs, ChatReport};
use super::presence::attr;
use super::report::{micros, ms, rate, Percentiles, Summary};
use super::{close_all, open_all, BenchOptions};

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
/// Longest wait for one page.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// `archive` figures.
#[derive(Debug, Clone)]
pub struct ArchiveReport {
    /// The chat phase that filled the archives.
    pub chat: ChatReport,
    /// Queries answered (one page each).
    pub queries: u64,
    /// `<result/>` messages received.
    pub returned: u64,
    /// Queries answered with an error, or not answered in time.
    pub query_errors: u64,
    pub elapsed: Duration,
    pub queries_per_sec: f64,
    pub archived_per_sec: f64,
    /// From sending the query to its IQ result.
    pub query_time: Percentiles,
    /// Messages the first complete pass returned, summed over the accounts that finished one.
    pub first_pass_messages: u64,
    /// Accounts that paged through their whole archive at least once.
    pub complete_accounts: usize,
}

impl ArchiveReport {
    pub fn summary(&self) -> Summary {
        let mut s = self.chat.summary();
        s.line("MAM queries", self.queries)
            .line("archived messages returned", self.returned)
            .line(
                "query phase",
                format!("{:.3} s", self.elapsed.as_secs_f64()),
            )
            .line("queries/s", format!("{:.1}", self.queries_per_sec))
            .line(
                "archived messages/s",
                format!("{:.1}", self.archived_per_sec),
            )
            .line("query p50", ms(self.query_time.p50_us))
            .line("query p99", ms(self.query_time.p99_us))
            .line("query errors", self.query_errors)
            .line("first pass messages", self.first_pass_messages)
            .line("accounts with a complete pass", self.complete_accounts);
        s.field("queries", self.queries)
            .field("pages", self.queries)
            .field("archived_returned", self.returned)
            .field(
                "query_elapsed_s",
                format!("{:.6}", self.elapsed.as_secs_f64()),
            )
            .field("queries_per_sec", format!("{:.3}", self.queries_per_sec))
            .field("archived_per_sec", format!("{:.3}", self.archived_per_sec))
            .field("query_p50_us", self.query_time.p50_us)
            .field("query_p99_us", self.query_time.p99_us)
            .field("query_errors", self.query_errors)
            .field("first_pass_messages", self.first_pass_messages)
            .field("complete_accounts", self.complete_accounts);
        s
    }
}

/// What one account's query loop saw.
struct QueryTally {
    queries: u64,
    returned: u64,
    errors: u64,
    times: Vec<u64>,
    first_pass: Option<u64>,
    last: Instant,
}

/// `chat` (see [`chat`]), then every chat account pages through its archive, `page_size`
/// messages a page, until `max_queries` queries each or the duration.
pub async fn archive(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    page_size: usize,
    max_queries: u64,
) -> Result<ArchiveReport, String> {
    check_pairs(opts, pairs, window, max_messages)?;
    if page_size == 0 || max_queries == 0 {
        return Err("page size and max queries must be at least 1".into());
    }
    let chat_report = chat(opts, pairs, window, max_messages, None).await?;
    let clients = open_all(opts, 0..2 * pairs).await?;
    let base = Instant::now();
    let deadline = base + opts.duration;
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(query_loop(client, page_size, max_queries, deadline));
    }
    let mut tallies = Vec::new();
    let mut open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (client, t) = r.map_err(|e| e.to_string())?;
        open.push(client);
        tallies.push(t);
    }
    close_all(open, opts.concurrency).await;
    let mut r = ArchiveReport {
        chat: chat_report,
        queries: 0,
        returned: 0,
        query_errors: 0,
        elapsed: Duration::ZERO,
        queries_per_sec: 0.0,
        archived_per_sec: 0.0,
        query_time: Percentiles::default(),
        first_pass_messages: 0,
        complete_accounts: 0,
    };
    let mut times = Vec::new();
    let mut last = base;
    for t in tallies {
        r.queries += t.queries;
        r.returned += t.returned;
        r.query_errors += t.errors;
        times.extend(t.times);
        last = last.max(t.last);
        if let Some(n) = t.first_pass {
            r.first_pass_messages += n;
            r.complete_accounts += 1;
        }
    }
    r.elapsed = last - base;
    r.queries_per_sec = rate(r.queries, r.elapsed);
    r.archived_per_sec = rate(r.returned, r.elapsed);
    r.query_time = Percentiles::of(times);
    Ok(r)
}

async fn query_loop(
    mut client: Client,
    page_size: usize,
    max_queries: u64,
    deadline: Instant,
) -> (Client, QueryTally) {
    let own = client.jid().bare().as_str().to_owned();
    let base = Instant::now();
    let mut t = QueryTally {
        queries: 0,
        returned: 0,
        errors: 0,
        times: Vec::new(),
        first_pass: None,
        last: base,
    };
    let mut after: Option<String> = None;
    let mut pass = 0u64;
    while t.queries < max_queries && Instant::now() < deadline {
        let n = t.queries + t.errors;
        let queryid = format!("q{n}");
        let iq_id = format!("mam-{n}");
        let mut set = Element::builder("set", NS_RSM)
            .append(Element::builder("max", NS_RSM).append(page_size.to_string()));
        if let Some(a) = &after {
            set = set.append(Element::builder("after", NS_RSM).append(a.as_str()));
        }
        let iq = Element::builder("iq", ns::CLIENT)
            .attr(attr("type"), "set")
            .attr(attr("id"), iq_id.as_str())
            .attr(attr("to"), own.as_str())
            .append(
                Element::builder("query", NS_MAM)
                    .attr(attr("queryid"), queryid.as_str())
                    .append(set),
            )
            .build();
        let sent_at = Instant::now();
        if client.send(&iq).await.is_err() {
            t.errors += 1;
            break;
        }
        let page = tokio::time::timeout(QUERY_TIMEOUT, read_page(&mut client, &iq_id, &queryid));
        match page.await {
            Ok(Ok((count, fin))) => {
                t.queries += 1;
                t.returned += count;
                pass += count;
                t.times.push(micros(sent_at.elapsed()));
                t.last = Instant::now();
                let complete = fin
                    .as_ref()
                    .and_then(|f| f.attribute("complete"))
                    .is_some_and(|c| c == "true" || c == "1");
                let last = fin
                    .as_ref()
                    .and_then(|f| f.get_child("set", NS_RSM))
                    .and_then(|s| s.get_child("last", NS_RSM))
                    .map(|l| l.text());
                if complete || last.is_none() || count == 0 {
                    t.first_pass.get_or_insert(pass);
                    pass = 0;
                    after = None;
                } else {
                    after = last;
                }
            }
            Ok(Err(_)) | Err(_) => {
                t.errors += 1;
                break;
            }
        }
    }
    (client, t)
}

/// Reads one page: the `<result/>` messages of `queryid` and the IQ answer; returns the
/// count and the `<fin/>` (or an error for an IQ error or a closed stream).
async fn read_page(
    client: &mut Client,
    iq_id: &str,
    queryid: &str,
) -> Result<(u64, Option<Element>), String> {
    let mut count = 0;
    loop {
        let st = client.recv().await.map_err(|e| e.to_string())?;
        match st.name() {
            "message"
                if st
                    .get_child("result", NS_MAM)
                    .is_some_and(|r| r.attribute("queryid") == Some(queryid)) =>
            {
                count += 1;
            }
            "iq" if st.attribute("id") == Some(iq_id) => {
                return match st.attribute("type") {
                    Some("result") => Ok((count, st.get_child("fin", NS_MAM).cloned())),
                    _ => Err("MAM query refused".into()),
                };
            }
            _ => {}
        }
    }
}
