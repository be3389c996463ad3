//! Points, polygons and line segments in a camera's source pixels.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Point { x, y }
    }

    /// Where an object stands: the bottom centre of its box (x1, y1, x2,
    /// y2), the point a zone drawn on the ground should contain.
    pub fn foot(b: [f32; 4]) -> Self {
        Point { x: f64::from(b[0] + b[2]) / 2.0, y: f64::from(b[3]) }
    }
}

/// A closed polygon of at least three distinct corners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Polygon(Vec<Point>);

impl Polygon {
    /// `None` unless there are at least 3 corners, all finite, enclosing
    /// some area.
    pub fn new(points: Vec<Point>) -> Option<Self> {
        if points.len() < 3 || points.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
            return None;
        }
        let p = Polygon(points);
        (p.area() > 0.0).then_some(p)
    }

    pub fn points(&self) -> &[Point] {
        &self.0
    }

    fn area(&self) -> f64 {
        let n = self.0.len();
        (0..n)
            .map(|i| {
                let (a, b) = (self.0[i], self.0[(i + 1) % n]);
                a.x * b.y - b.x * a.y
            })
            .sum::<f64>()
            .abs()
            / 2.0
    }

    /// Whether `p` lies inside (even-odd rule: a ray to the right crosses
    /// the edges an odd number of times).
    pub fn contains(&self, p: Point) -> bool {
        let n = self.0.len();
        let mut inside = false;
        for i in 0..n {
            let (a, b) = (self.0[i], self.0[(i + n - 1) % n]);
            if (a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x {
                inside = !inside;
            }
        }
        inside
    }
}

/// A directed segment from `a` to `b`: its two sides are named by the
/// direction of travel across it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub a: Point,
    pub b: Point,
}

impl Segment {
    /// `None` for a segment of length 0 or with a non-finite end.
    pub fn new(a: Point, b: Point) -> Option<Self> {
        let finite = [a.x, a.y, b.x, b.y].iter().all(|v| v.is_finite());
        (finite && (a.x != b.x || a.y != b.y)).then_some(Segment { a, b })
    }

    pub fn length(&self) -> f64 {
        (self.b.x - self.a.x).hypot(self.b.y - self.a.y)
    }

    /// Signed distance of `p` from the segment's line: positive on the
    /// left of a → b (in image coordinates, y down: the side a clockwise
    /// turn from a → b points to is negative).
    pub fn side(&self, p: Point) -> f64 {
        let (dx, dy) = (self.b.x - self.a.x, self.b.y - self.a.y);
        (dx * (p.y - self.a.y) - dy * (p.x - self.a.x)) / self.length()
    }

    /// Whether the path from `p` to `q` crosses the segment itself (not
    /// only its line, beyond an end).
    pub fn crossed_by(&self, p: Point, q: Point) -> bool {
        let (sp, sq) = (self.side(p), self.side(q));
        if sp == sq || sp.signum() == sq.signum() {
            return false;
        }
        // Where the path meets the line, as a share of a → b.
        let t = sp / (sp - sq);
        let m = Point::new(p.x + (q.x - p.x) * t, p.y + (q.y - p.y) * t);
        let (dx, dy) = (self.b.x - self.a.x, self.b.y - self.a.y);
        let u = ((m.x - self.a.x) * dx + (m.y - self.a.y) * dy) / (dx * dx + dy * dy);
        (0.0..=1.0).contains(&u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Polygon {
        Polygon::new(vec![Point::new(0.0, 0.0), Point::new(10.0, 0.0), Point::new(10.0, 10.0), Point::new(0.0, 10.0)])
            .unwrap()
    }

    #[test]
    fn polygons_hold_their_inside() {
        let s = square();
        assert!(s.contains(Point::new(5.0, 5.0)));
        assert!(!s.contains(Point::new(15.0, 5.0)));
        assert!(!s.contains(Point::new(-0.1, 5.0)));
        // A concave L: its notch is outside.
        let l = Polygon::new(
            [(0.0, 0.0), (10.0, 0.0), (10.0, 4.0), (4.0, 4.0), (4.0, 10.0), (0.0, 10.0)]
                .map(|(x, y)| Point::new(x, y))
                .to_vec(),
        )
        .unwrap();
        assert!(l.contains(Point::new(2.0, 8.0)));
        assert!(!l.contains(Point::new(8.0, 8.0)));
    }

    #[test]
    fn degenerate_shapes_are_refused() {
        assert!(Polygon::new(vec![Point::new(0.0, 0.0), Point::new(1.0, 1.0)]).is_none());
        let flat = vec![Point::new(0.0, 0.0), Point::new(1.0, 1.0), Point::new(2.0, 2.0)];
        assert!(Polygon::new(flat).is_none());
        assert!(Polygon::new(vec![Point::new(f64::NAN, 0.0), Point::new(1.0, 0.0), Point::new(0.0, 1.0)]).is_none());
        assert!(Segment::new(Point::new(3.0, 3.0), Point::new(3.0, 3.0)).is_none());
    }

    #[test]
    fn a_path_crosses_the_segment_not_its_line_beyond_the_ends() {
        let s = Segment::new(Point::new(0.0, 0.0), Point::new(10.0, 0.0)).unwrap();
        assert!(s.crossed_by(Point::new(5.0, -1.0), Point::new(5.0, 1.0)));
        assert!(s.crossed_by(Point::new(5.0, 1.0), Point::new(5.0, -1.0)));
        assert!(!s.crossed_by(Point::new(15.0, -1.0), Point::new(15.0, 1.0)), "beyond the end");
        assert!(!s.crossed_by(Point::new(5.0, 1.0), Point::new(6.0, 2.0)), "same side");
        assert!(s.side(Point::new(5.0, 1.0)) > 0.0 && s.side(Point::new(5.0, -1.0)) < 0.0);
    }
}
