//! Located configuration errors: `path:line:col: message`.
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every error found in a configuration folder, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One configuration file's text, to turn byte offsets into lines and columns
/// and to collect the errors found in it.
pub struct SourceText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub errors: Vec<Diagnostic>,
    /// Valid, but probably not what was meant: `ferry check` prints them,
    /// runs log them.
    pub warnings: Vec<Diagnostic>,
}

impl<'a> SourceText<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        SourceText {
            path,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn diagnostic(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = line_col(self.text, span.start);
        Diagnostic {
            path: self.path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diagnostic(span, message);
        self.errors.push(d);
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diagnostic(span, message);
        self.warnings.push(d);
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_lines_and_columns_from_one() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(super::line_col(t, 0), (1, 1));
        assert_eq!(super::line_col(t, 6), (2, 1));
        assert_eq!(super::line_col(t, 10), (2, 4));
    }
}
