//! Go's `strconv.FormatFloat` for the verbs `%e`, `%g` and `%v`.

/// The shortest digits of `f` and its decimal exponent (`d.ddd × 10^exp`).
fn shortest(f: f64) -> (String, i32) {
    let text = format!("{:e}", f.abs());
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    (mantissa.replace('.', ""), exp.parse().unwrap_or(0))
}

/// `%e` with `precision` digits after the point.
pub(super) fn format_e(f: f64, precision: usize, upper: bool) -> String {
    let text = format!("{:.*e}", precision, f.abs());
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let e = if upper { 'E' } else { 'e' };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}{e}{esign}{:02}", exp.unsigned_abs())
}

/// `%g`/`%v`: the shortest digits (or `precision` significant ones), in
/// `%e` form when the exponent is below -4 or at least the precision (6
/// for the shortest form).
pub(super) fn format_g(f: f64, precision: Option<usize>, upper: bool, sharp: bool) -> String {
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let (digits, exp, eprec) = match precision {
        None => {
            let (digits, exp) = shortest(f);
            (digits, exp, 6)
        }
        Some(p) => {
            let p = p.max(1);
            let text = format!("{:.*e}", p - 1, f.abs());
            let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
            let mut digits = mantissa.replace('.', "");
            if !sharp {
                while digits.len() > 1 && digits.ends_with('0') {
                    digits.pop();
                }
            }
            let eprec = if !sharp
                && p > digits.len()
                && digits.len() >= usize::try_from(exp.parse::<i32>().unwrap_or(0) + 1).unwrap_or(0)
            {
                digits.len()
            } else {
                p
            };
            (digits, exp.parse().unwrap_or(0), eprec)
        }
    };
    let eprec = i32::try_from(eprec).unwrap_or(i32::MAX);
    if exp < -4 || exp >= eprec {
        let e = if upper { 'E' } else { 'e' };
        let esign = if exp < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        return format!("{sign}{first}{point}{e}{esign}{:02}", exp.unsigned_abs());
    }
    let digits_len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if exp < 0 {
        let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    if exp + 1 >= digits_len {
        let zeros = "0".repeat(usize::try_from(exp + 1 - digits_len).unwrap_or(0));
        return format!("{sign}{digits}{zeros}");
    }
    let (int, frac) = digits.split_at(usize::try_from(exp + 1).unwrap_or(0));
    format!("{sign}{int}.{frac}")
}
