//! Sprig's float arithmetic: `addf`, `add1f`, `subf`, `mulf`, `divf` go
//! through `shopspring/decimal` 1.3 (each argument `cast.ToFloat64`, then
//! the shortest decimal that reads back as that float, exact sums and
//! products, quotients rounded half away from zero to 16 places, and the
//! nearest float to the exact result), and `maxf`, `minf`, `ceil`,
//! `floor`, `round` over Go's `math`.

use num_bigint::{BigInt, Sign};

use super::super::model::{self, Go};
use super::conv::{Out, charge, first, int, to_float64};

/// `shopspring/decimal`'s `Decimal`: `value × 10^exp`.
#[derive(Clone)]
struct Decimal {
    value: BigInt,
    exp: i64,
}

/// Quotients keep 16 decimal places (`decimal.DivisionPrecision`).
const DIVISION_PRECISION: i64 = 16;

/// The largest power of ten a template may make the driver compute: an
/// exponent difference beyond any two `float64`s' (about 2 × 324 + 17).
const MAX_SCALE: i64 = 800;

fn ten_pow(n: i64) -> Result<BigInt, String> {
    if n > MAX_SCALE * 4 {
        return Err("decimal: the numbers are too far apart".to_owned());
    }
    charge(usize::try_from(n).unwrap_or(0))?;
    Ok(BigInt::from(10u32).pow(u32::try_from(n).unwrap_or(0)))
}

impl Decimal {
    /// `decimal.NewFromFloat`: the shortest decimal that reads back as
    /// `f` (Go panics on NaN and infinities; the template fails).
    fn from_float(f: f64) -> Result<Self, String> {
        if !f.is_finite() {
            return Err(format!("Cannot create a Decimal from {f}"));
        }
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let exp: i64 = exp.parse().unwrap_or(0);
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: BigInt = format!("{whole}{frac}").parse().unwrap_or_default();
        let frac_len = i64::try_from(frac.len()).unwrap_or(0);
        Ok(Self {
            value: digits,
            exp: exp - frac_len,
        })
    }

    /// Both at the smaller exponent.
    fn aligned(&self, other: &Self) -> Result<(BigInt, BigInt, i64), String> {
        let exp = self.exp.min(other.exp);
        let a = &self.value * ten_pow(self.exp - exp)?;
        let b = &other.value * ten_pow(other.exp - exp)?;
        Ok((a, b, exp))
    }

    fn add(&self, other: &Self) -> Result<Self, String> {
        let (a, b, exp) = self.aligned(other)?;
        Ok(Self { value: a + b, exp })
    }

    fn sub(&self, other: &Self) -> Result<Self, String> {
        let (a, b, exp) = self.aligned(other)?;
        Ok(Self { value: a - b, exp })
    }

    fn mul(&self, other: &Self) -> Self {
        Self {
            value: &self.value * &other.value,
            exp: self.exp + other.exp,
        }
    }

    /// `DivRound(d2, 16)`: `QuoRem`'s truncated quotient, then half away
    /// from zero.
    fn div(&self, other: &Self) -> Result<Self, String> {
        if other.value.sign() == Sign::NoSign {
            return Err("decimal division by 0".to_owned());
        }
        let e = self.exp - other.exp + DIVISION_PRECISION;
        let (aa, bb) = if e < 0 {
            (self.value.clone(), &other.value * ten_pow(-e)?)
        } else {
            (&self.value * ten_pow(e)?, other.value.clone())
        };
        let (q, r) = (&aa / &bb, &aa % &bb);
        let twice = r.magnitude() * 2u32;
        let mut q = q;
        if twice >= *bb.magnitude() {
            let negative =
                (self.value.sign() == Sign::Minus) != (other.value.sign() == Sign::Minus);
            q += if negative { -1 } else { 1 };
        }
        Ok(Self {
            value: q,
            exp: -DIVISION_PRECISION,
        })
    }

    /// `Float64()`: the float nearest the exact value.
    fn to_float(&self) -> f64 {
        format!("{}e{}", self.value, self.exp)
            .parse()
            .unwrap_or(f64::NAN)
    }
}

/// Sprig's `execDecimalOp`: `a`, then each of `rest` folded in.
fn decimal_op(
    a: &Go<'_>,
    rest: &[Go<'_>],
    op: fn(&Decimal, &Decimal) -> Result<Decimal, String>,
) -> Out {
    let mut acc = Decimal::from_float(to_float64(a))?;
    for x in rest {
        let x = Decimal::from_float(to_float64(x))?;
        acc = op(&acc, &x)?;
        let digits = acc.value.bits() / 3;
        charge(usize::try_from(digits).unwrap_or(usize::MAX))?;
    }
    Ok(model::float(acc.to_float()))
}

/// Go's `math.Max` and `math.Min`: an infinity wins, then NaN, and of two
/// zeros `Max` takes +0 and `Min` -0.
fn extreme(a: f64, b: f64, max: bool) -> f64 {
    let wins = |x: f64| x.is_infinite() && (x.is_sign_positive() == max);
    if wins(a) || wins(b) {
        return if max {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        let positive = !a.is_sign_negative() || !b.is_sign_negative();
        let pick_positive = if max {
            positive
        } else {
            a.is_sign_positive() && b.is_sign_positive()
        };
        return if pick_positive { 0.0 } else { -0.0 };
    }
    if (a > b) == max { a } else { b }
}

/// Sprig's `round x places [roundOn]`.
fn round(args: &[Go<'_>]) -> Out {
    let (value, places, round_on) = match args {
        [v, p] => (v, p, 0.5),
        [v, p, on, ..] => (v, p, to_float64(on)),
        _ => return Err("wrong number of args for round".to_owned()),
    };
    #[allow(clippy::cast_precision_loss)] // cast.ToFloat64 of an int
    let places = int(places)? as f64;
    let pow = 10f64.powf(places);
    let digit = pow * to_float64(value);
    let rounded = if digit.fract() >= round_on {
        digit.ceil()
    } else {
        digit.floor()
    };
    Ok(model::float(rounded / pow))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_add1f" => decimal_op(&first(args), &[Go::Int(1)], Decimal::add),
        "sprig_addf" => decimal_op(&Go::Float(0.0), args, Decimal::add),
        "sprig_subf" | "sprig_mulf" | "sprig_divf" => {
            let Some((a, rest)) = args.split_first() else {
                return Some(Err(format!("wrong number of args for {name}")));
            };
            let op: fn(&Decimal, &Decimal) -> Result<Decimal, String> = match name {
                "sprig_subf" => Decimal::sub,
                "sprig_mulf" => |a, b| Ok(a.mul(b)),
                _ => Decimal::div,
            };
            decimal_op(a, rest, op)
        }
        "sprig_maxf" | "sprig_minf" => match args.split_first() {
            Some((a, rest)) => Ok(model::float(rest.iter().fold(to_float64(a), |acc, b| {
                extreme(acc, to_float64(b), name == "sprig_maxf")
            }))),
            None => Err(format!("wrong number of args for {name}")),
        },
        "sprig_ceil" => Ok(model::float(to_float64(&first(args)).ceil())),
        "sprig_floor" => Ok(model::float(to_float64(&first(args)).floor())),
        "sprig_round" => round(args),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the results are exact
mod tests {
    use super::Decimal;

    fn op(a: f64, b: f64, f: fn(&Decimal, &Decimal) -> Result<Decimal, String>) -> f64 {
        f(
            &Decimal::from_float(a).unwrap(),
            &Decimal::from_float(b).unwrap(),
        )
        .unwrap()
        .to_float()
    }

    #[test]
    fn decimal_arithmetic_is_shopspring_decimals() {
        let _metered = crate::render::budget::Metered::start(crate::render::budget::Limits::FULL);
        // Exact in decimal, unlike the floats themselves.
        assert_eq!(op(0.1, 0.2, Decimal::add), 0.3);
        assert_eq!(op(1.0, 3.0, Decimal::div), 0.333_333_333_333_333_3);
        assert_eq!(op(2.0, 3.0, Decimal::div), 0.666_666_666_666_666_7);
        assert_eq!(op(-2.0, 3.0, Decimal::div), -0.666_666_666_666_666_7);
        assert_eq!(op(1e300, 1e-300, Decimal::add), 1e300);
        assert_eq!(op(1.1, 1.1, |a, b| Ok(a.mul(b))), 1.21);
        assert!(Decimal::from_float(f64::NAN).is_err());
        assert!(
            Decimal::from_float(1.0)
                .unwrap()
                .div(&Decimal::from_float(0.0).unwrap())
                .is_err()
        );
    }
}
