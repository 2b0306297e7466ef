use tidemark_service_core::audit::{GENESIS, Outcome, parse_line};
use tidemark_service_core::{AuditChain, AuditEntry, ChainBreak, Role, verify_chain, verify_chain_to};

use crate::ts;

fn entry(n: u32) -> AuditEntry {
    AuditEntry {
        time: ts("2026-01-10T19:30:00Z"),
        actor: Some("ci".into()),
        role: Some(Role::Operator),
        ip: "10.0.0.7".parse().unwrap(),
        action: "POST /api/v1/sources/uploads/backup".into(),
        target: format!("uploads#{n}"),
        outcome: Outcome::Ok,
        detail: None,
    }
}

/// A chain of five lines and the recorded head.
fn log() -> (Vec<String>, String) {
    let mut chain = AuditChain::new();
    let lines = (1..=5).map(|n| chain.append(&entry(n))).collect();
    (lines, chain.head().to_string())
}

fn check(lines: &[String]) -> Result<(), ChainBreak> {
    verify_chain(lines.iter().map(String::as_str))
}

#[test]
fn a_line_is_json_chained_to_the_one_before() {
    let (lines, head) = log();
    assert!(
        lines[0].starts_with(
            "{\"seq\":1,\"time\":\"2026-01-10T19:30:00Z\",\"actor\":\"ci\",\"role\":\"operator\",\"ip\":\"10.0.0.7\""
        ),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(&format!("\"prev\":\"{GENESIS}\"}}")), "{}", lines[0]);
    assert!(!lines[0].contains('\n') && !lines[0].contains("detail"));
    assert_eq!(check(&lines), Ok(()));
    assert_eq!(verify_chain_to(lines.iter().map(String::as_str), &head), Ok(()));
    let (seq, parsed) = parse_line(&lines[2]).unwrap();
    assert_eq!((seq, parsed), (3, entry(3)));
}

#[test]
fn an_unauthenticated_refusal_is_recorded_too() {
    let mut chain = AuditChain::new();
    let refused = AuditEntry {
        actor: None,
        role: None,
        outcome: Outcome::Denied,
        detail: Some("the link expired".into()),
        ..entry(1)
    };
    let line = chain.append(&refused);
    assert!(line.contains("\"actor\":null,\"role\":null"), "{line}");
    assert!(line.contains("\"outcome\":\"denied\",\"detail\":\"the link expired\""), "{line}");
    assert_eq!(parse_line(&line).unwrap().1, refused);
}

#[test]
fn a_modified_line_is_found_at_the_next_one() {
    let (mut lines, _) = log();
    lines[1] = lines[1].replace("uploads#2", "uploads#9");
    let err = check(&lines).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.reason.contains("hash of line 2"), "{err}");
    assert_eq!(err.to_string(), format!("audit log line 3: {}", err.reason));
}

#[test]
fn a_removed_line_is_found() {
    let (mut lines, _) = log();
    lines.remove(2);
    let err = check(&lines).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.reason.contains("entry 4 where entry 3 was expected: entry 3 was removed"), "{err}");
    // The first line too.
    let (mut lines, _) = log();
    lines.remove(0);
    assert_eq!(check(&lines).unwrap_err().line, 1);
}

#[test]
fn reordered_lines_are_found() {
    let (mut lines, _) = log();
    lines.swap(1, 2);
    let err = check(&lines).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.reason.contains("entry 3 where entry 2 was expected"), "{err}");
}

#[test]
fn a_renumbered_or_rechained_forgery_is_found() {
    // Removing line 3 and renumbering the rest keeps seq in order, but not the hashes.
    let (lines, _) = log();
    let renumbered: Vec<String> = lines[..2]
        .iter()
        .cloned()
        .chain(lines[3..].iter().map(|l| l.replace("\"seq\":4", "\"seq\":3").replace("\"seq\":5", "\"seq\":4")))
        .collect();
    assert_eq!(check(&renumbered).unwrap_err().line, 3);
    // A first line taken from another log's middle does not start from the genesis hash.
    let mut forged = lines.clone();
    forged[0] = lines[0].replace(GENESIS, &"ab".repeat(32));
    let err = check(&forged).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.reason.contains("where the chain starts"), "{err}");
}

#[test]
fn the_tail_needs_the_recorded_head() {
    let (lines, head) = log();
    // Dropping or editing the last line leaves a valid chain...
    let shorter = &lines[..4];
    assert_eq!(check(shorter), Ok(()));
    let mut edited = lines.clone();
    edited[4] = edited[4].replace("uploads#5", "uploads#6");
    assert_eq!(check(&edited), Ok(()));
    // ...which the recorded head exposes.
    let err = verify_chain_to(shorter.iter().map(String::as_str), &head).unwrap_err();
    assert_eq!(err.line, 4);
    assert!(err.reason.contains("recorded head"), "{err}");
    assert_eq!(verify_chain_to(edited.iter().map(String::as_str), &head).unwrap_err().line, 5);
}

#[test]
fn garbage_lines_are_reported() {
    let (mut lines, _) = log();
    lines[3] = "not json".into();
    let err = check(&lines).unwrap_err();
    assert_eq!(err.line, 4);
    assert!(err.reason.starts_with("not an audit entry"), "{err}");
    let (mut lines, _) = log();
    lines[0] = lines[0].replace(GENESIS, "zz");
    assert!(check(&lines).unwrap_err().reason.contains("not a SHA-256"));
}

#[test]
fn resuming_after_a_restart_continues_the_chain() {
    let (lines, head) = log();
    let mut chain = AuditChain::resume(&lines[4]).unwrap();
    assert_eq!((chain.head(), chain.next_seq()), (head.as_str(), 6));
    let mut all = lines.clone();
    all.push(chain.append(&entry(6)));
    assert_eq!(check(&all), Ok(()));
    // Verifying from a known state returns the state after the lines.
    let after = AuditChain::new().verify(lines.iter().map(String::as_str)).unwrap();
    assert_eq!(after, AuditChain::resume(&lines[4]).unwrap());
    assert!(AuditChain::resume("{}").is_err());
}
