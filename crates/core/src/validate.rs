//! Semantic validation of a site configuration with file/line/column diagnostics.
//! (placeholder: being written)

use crate::config::SiteConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub warning: bool,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        !self.warning
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file,
            self.line,
            self.column,
            if self.warning { "warning" } else { "error" },
            self.message
        )
    }
}

/// Parse and check a configuration text. Returns the configuration when it parsed, and all
/// diagnostics found.
pub fn validate_text(file: &str, text: &str) -> (Option<SiteConfig>, Vec<Diagnostic>) {
    match SiteConfig::from_toml_str(text) {
        Ok(c) => (Some(c), vec![]),
        Err(e) => (
            None,
            vec![Diagnostic {
                file: file.to_string(),
                line: e.line,
                column: e.column,
                message: e.message,
                warning: false,
            }],
        ),
    }
}
