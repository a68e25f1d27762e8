//! The paths a patch names, and the rule they must keep: inside the repository and out of its
//! `.git`. The patch comes out of the sandbox, so it is read here as hostile text: every path
//! `git apply` (or `git am`) could take a file name from is checked, also in renames and copies,
//! in traditional `---`/`+++` headers and in commit messages (which `git am` may read as a
//! patch).
//!
//! Hunk bodies are skipped by their line counts, as `git apply` reads them, so that a removed
//! line that happens to read `-- x` (shown as `--- x`) is not taken for a header, while a
//! header hidden after a hunk's last line still is.

/// Why a path is refused, or `None` when it is a plain path inside the repository.
pub fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.starts_with('/') {
        return Some("it is absolute");
    }
    for component in path.split('/') {
        if component == ".." {
            return Some("it leaves the repository (`..`)");
        }
        if is_dot_git(component) {
            return Some("it is inside `.git`");
        }
    }
    None
}

/// `.git` in any case, also as file systems that ignore trailing dots and spaces (Windows) or
/// some invisible characters (macOS) would read it, and as its Windows short name `git~1`.
fn is_dot_git(component: &str) -> bool {
    let visible: String = component
        .chars()
        .filter(|c| !matches!(*c, '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'))
        .collect();
    let trimmed = visible.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(".git") || trimmed.eq_ignore_ascii_case("git~1")
}

/// A path in a patch that breaks the rule, with the line it was found on (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsafePatchPath {
    pub line: usize,
    pub path: String,
    pub why: &'static str,
}

/// The first path in `patch` that breaks the rule, if any.
pub fn first_unsafe_path(patch: &[u8]) -> Option<UnsafePatchPath> {
    let text = String::from_utf8_lossy(patch);
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((old, new)) = hunk_counts(line) {
            skip_hunk(&mut lines, old, new);
            continue;
        }
        for path in header_paths(line) {
            if let Some(why) = unsafe_path(&path) {
                return Some(UnsafePatchPath {
                    line: index + 1,
                    path,
                    why,
                });
            }
        }
    }
    None
}

/// The file names a header line gives `git apply`: both names of `diff --git`, the name of a
/// `---`/`+++` line (not `/dev/null`), the name of a rename or copy line.
fn header_paths(line: &str) -> Vec<String> {
    if let Some(rest) = line.strip_prefix("diff --git ") {
        return words(rest);
    }
    for prefix in ["--- ", "+++ "] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let name = one_name(rest);
            return if name == "/dev/null" {
                Vec::new()
            } else {
                vec![strip_prefix_dir(&name)]
            };
        }
    }
    for prefix in [
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
        "rename old ",
        "rename new ",
    ] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return vec![one_name(rest)];
        }
    }
    Vec::new()
}

/// `a/x` → `x`: the first component `git apply -p1` strips (an absolute path stays absolute, so
/// that it is refused).
fn strip_prefix_dir(name: &str) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    match name.split_once('/') {
        Some((_, rest)) => rest.to_string(),
        None => name.to_string(),
    }
}

/// The words of a `diff --git` line: quoted names unquoted, others split at spaces (a name with
/// spaces is then checked in pieces, which can only refuse more).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (word, after) = unquote(rest);
            out.push(word);
            rest = after.trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out.into_iter().map(|w| strip_prefix_dir(&w)).collect()
}

/// One file name: quoted, or up to a tab (traditional diffs put a date after one).
fn one_name(text: &str) -> String {
    if text.starts_with('"') {
        unquote(text).0
    } else {
        text.split('\t').next().unwrap_or("").trim_end().to_string()
    }
}

/// A C-style quoted string at the start of `text` (which starts with `"`), and what follows.
fn unquote(text: &str) -> (String, &str) {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return (String::from_utf8_lossy(&out).into_owned(), &text[i + 1..]),
            b'\\' if i + 1 < bytes.len() => {
                let c = bytes[i + 1];
                let octal = |b: u8| (b'0'..=b'7').contains(&b);
                if octal(c) && i + 3 < bytes.len() && octal(bytes[i + 2]) && octal(bytes[i + 3]) {
                    let value = (c - b'0') as u32 * 64
                        + (bytes[i + 2] - b'0') as u32 * 8
                        + (bytes[i + 3] - b'0') as u32;
                    out.push(value as u8);
                    i += 4;
                    continue;
                }
                out.push(match c {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'a' => 7,
                    b'b' => 8,
                    b'f' => 12,
                    b'v' => 11,
                    other => other,
                });
                i += 2;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    // No closing quote: the whole rest is the name.
    (String::from_utf8_lossy(&out).into_owned(), "")
}

/// The old and new line counts of a hunk header `@@ -a[,b] +c[,d] @@`.
fn hunk_counts(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let count = |range: &str| -> Option<usize> {
        match range.split_once(',') {
            Some((start, n)) => {
                start.parse::<usize>().ok()?;
                n.parse().ok()
            }
            None => range.parse::<usize>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}

/// Consumes a hunk's body: `old` lines of context or removal and `new` of context or addition
/// (`\ No newline at end of file` markers count for neither). Stops early at a line that cannot
/// be part of a hunk, leaving that line to the next read as `git apply` would.
fn skip_hunk<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = (usize, &'a str)>>,
    mut old: usize,
    mut new: usize,
) {
    while old > 0 || new > 0 {
        let Some((_, line)) = lines.peek() else {
            return;
        };
        match line.as_bytes().first() {
            Some(b' ') if old > 0 && new > 0 => {
                old -= 1;
                new -= 1;
            }
            // An empty line is an empty context line, as git apply reads it.
            None if old > 0 && new > 0 => {
                old -= 1;
                new -= 1;
            }
            Some(b'-') if old > 0 => old -= 1,
            Some(b'+') if new > 0 => new -= 1,
            Some(b'\\') => {}
            _ => return,
        }
        lines.next();
    }
    // A `\ No newline` marker right after the last line belongs to the hunk too.
    if lines.peek().is_some_and(|(_, l)| l.starts_with('\\')) {
        lines.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "From 1234 Mon Sep 17 00:00:00 2001
From: runner <runner@localhost>
Subject: [PATCH] greet

---
 greet.py | 3 ++-
 1 file changed, 2 insertions(+), 1 deletion(-)

diff --git a/greet.py b/greet.py
index e69de29..4b825dc 100644
--- a/greet.py
+++ b/greet.py
@@ -1,2 +1,3 @@
 def greet(name):
--- a/removed-line-that-looks-like-a-header
+--- b/../../added-line-that-looks-like-a-header
+    return name
diff --git a/my file.txt b/my file.txt
new file mode 100644
--- /dev/null
+++ b/my file.txt
@@ -0,0 +1 @@
+x
\\ No newline at end of file
diff --git a/old.txt b/new.txt
similarity index 100%
rename from old.txt
rename to new.txt
diff --git a/.gitignore b/.github/x.gitx
--
2.47.3
";

    #[test]
    fn plain_paths_pass_and_hunk_bodies_are_not_headers() {
        assert_eq!(first_unsafe_path(GOOD.as_bytes()), None);
        assert_eq!(first_unsafe_path(b""), None);
    }

    fn refused(patch: &str) -> UnsafePatchPath {
        first_unsafe_path(patch.as_bytes()).unwrap_or_else(|| panic!("not refused:\n{patch}"))
    }

    #[test]
    fn paths_out_of_the_repository_or_into_git_are_refused_wherever_they_are_named() {
        for (patch, path) in [
            ("diff --git a/../x b/../x\n", "../x"),
            ("diff --git a/ok b/.git/config\n", ".git/config"),
            (
                "diff --git \"a/.GIT/hooks/pre-commit\" \"b/ok\"\n",
                ".GIT/hooks/pre-commit",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/sub/.Git/config\n",
                "sub/.Git/config",
            ),
            (
                "diff --git a/x b/x\n--- /etc/passwd\n+++ b/x\n",
                "/etc/passwd",
            ),
            (
                "diff --git a/x b/y\nrename from x\nrename to ../../y\n",
                "../../y",
            ),
            (
                "diff --git a/x b/y\ncopy from x\ncopy to .git/hooks/post-checkout\n",
                ".git/hooks/post-checkout",
            ),
            ("diff --git a/x b/y\nrename from /abs\n", "/abs"),
            (
                "diff --git a/x b/x\n--- a/x\n+++ \"b/\\056git/config\"\n",
                ".git/config",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/.git./config\n",
                ".git./config",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/GIT~1/config\n",
                "GIT~1/config",
            ),
            (
                "diff --git a/x b/x\n--- a/x\n+++ b/.g\u{200c}it/config\n",
                ".g\u{200c}it/config",
            ),
        ] {
            assert_eq!(refused(patch).path, path, "{patch}");
        }
    }

    #[test]
    fn a_traditional_header_after_a_hunk_or_in_a_message_is_still_read() {
        let after_hunk = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\
                          --- a/../../etc/cron.d/x\n+++ b/../../etc/cron.d/x\n@@ -0,0 +1 @@\n+boom\n";
        let got = refused(after_hunk);
        assert_eq!((got.line, got.path.as_str()), (7, "../../etc/cron.d/x"));
        assert_eq!(got.why, "it leaves the repository (`..`)");
        let in_message = "Subject: [PATCH] x\n\nsee\n--- a/.git/config\n+++ b/.git/config\n";
        assert_eq!(refused(in_message).why, "it is inside `.git`");
    }

    #[test]
    fn hunk_counts_are_read_like_git_apply() {
        assert_eq!(hunk_counts("@@ -1,2 +1,3 @@"), Some((2, 3)));
        assert_eq!(hunk_counts("@@ -0,0 +1 @@ fn x"), Some((0, 1)));
        assert_eq!(hunk_counts("@@ -a +1 @@"), None);
        assert_eq!(hunk_counts("@@@ -1 +1 @@@"), None);
    }

    #[test]
    fn the_rule_for_one_path() {
        for ok in [
            "a",
            "a/b.txt",
            ".github/x",
            ".gitignore",
            "x.git",
            "a/.gitx/b",
            "..x",
            "git~2",
        ] {
            assert_eq!(unsafe_path(ok), None, "{ok}");
        }
        for bad in ["/x", "..", "a/../b", ".git", "a/.GIT", ".git /x", "Git~1"] {
            assert!(unsafe_path(bad).is_some(), "{bad}");
        }
    }
}
