//! Reading the docs as tests do: the code blocks a Markdown page shows.

/// The bodies of the fenced code blocks tagged `lang` (```sh, ```yaml), in order.
pub fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, start) if start == fence => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The links of the form ``[`name`](path.rs)`` on a page: a claim backed by the test `name` in
/// the Rust file `path` (relative to the page), in order.
pub fn test_links(markdown: &str) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("[`") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("`](") else { break };
        let name = &rest[..end];
        let after = &rest[end + 3..];
        let Some(close) = after.find(')') else { break };
        let target = &after[..close];
        let path = target.split('#').next().unwrap_or(target);
        if path.ends_with(".rs") && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            links.push((name.to_string(), path.to_string()));
        }
    }
    links
}

/// Whether `source` defines a test function `name`: `fn name` with `#[test]` or `#[tokio::test…]`
/// among the attributes (and doc comments) right above it.
pub fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let line = line.trim_start();
        let signature = ["fn ", "async fn ", "pub fn ", "pub async fn "].iter().any(|prefix| {
            line.strip_prefix(prefix).and_then(|l| l.strip_prefix(name)).is_some_and(|l| l.starts_with(['(', '<']))
        });
        signature
            && lines[..i]
                .iter()
                .rev()
                .map(|l| l.trim_start())
                .take_while(|l| l.starts_with("#[") || l.starts_with("///") || l.starts_with("//"))
                .any(|l| l.starts_with("#[test]") || l.starts_with("#[tokio::test"))
    })
}
