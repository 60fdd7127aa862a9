//! CSV for accountants: RFC 4180 quoting, and cells that a spreadsheet would run as a formula
//! defused. The values come from merchants and customers (descriptions, order ids, metadata),
//! so a cell such as `=HYPERLINK(…)` must reach the spreadsheet as text.

/// Appends one cell: a leading `'` when it starts like a formula (`=`, `+`, `-`, `@`, tab or
/// carriage return, as OWASP lists), then quoted when it holds a comma, quote or line break.
pub fn push_cell(out: &mut String, value: &str) {
    let risky = matches!(
        value.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    );
    let needs_quotes = risky || value.contains([',', '"', '\n', '\r']) || value.starts_with(' ');
    if needs_quotes {
        out.push('"');
    }
    if risky {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if needs_quotes {
        out.push('"');
    }
}

/// Appends a whole row ending in CRLF.
pub fn push_row<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, c.as_ref());
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> String {
        let mut s = String::new();
        push_row(&mut s, cells);
        s
    }

    #[test]
    fn quotes_what_needs_it() {
        assert_eq!(row(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(
            row(&["a,b", "say \"hi\""]),
            "\"a,b\",\"say \"\"hi\"\"\"\r\n"
        );
        assert_eq!(row(&["two\nlines"]), "\"two\nlines\"\r\n");
    }

    #[test]
    fn defuses_formulas() {
        assert_eq!(row(&["=1+1"]), "\"'=1+1\"\r\n");
        assert_eq!(
            row(&["+91", "-5", "@SUM(A1)"]),
            "\"'+91\",\"'-5\",\"'@SUM(A1)\"\r\n"
        );
        assert_eq!(row(&["149.87"]), "149.87\r\n");
        assert_eq!(row(&["a=b"]), "a=b\r\n");
    }
}
