//! The picture's orientation: flips and a rotation composed into one of GStreamer's eight
//! video orientation methods. A leaf, so the plan, the camera's properties and whoever needs the
//! delivered picture size can all use it.

/// A picture orientation: one of GStreamer's eight video orientation methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// Unchanged.
    Identity,
    /// 90° clockwise.
    Rotate90,
    /// 180°.
    Rotate180,
    /// 90° counter-clockwise.
    Rotate270,
    /// Mirrored left-right.
    Horizontal,
    /// Mirrored top-bottom.
    Vertical,
    /// Flipped across the upper-left/lower-right diagonal.
    Transpose,
    /// Flipped across the upper-right/lower-left diagonal.
    OtherTranspose,
}

impl Orientation {
    /// Flips first, then a clockwise rotation, composed into one method.
    pub fn of(hflip: bool, vflip: bool, rotation: u32) -> Orientation {
        // 2×2 matrices on (x right, y down) pixel coordinates.
        let mut m = [[1i8, 0], [0, 1]];
        let mul = |a: [[i8; 2]; 2], b: [[i8; 2]; 2]| {
            [
                [
                    a[0][0] * b[0][0] + a[0][1] * b[1][0],
                    a[0][0] * b[0][1] + a[0][1] * b[1][1],
                ],
                [
                    a[1][0] * b[0][0] + a[1][1] * b[1][0],
                    a[1][0] * b[0][1] + a[1][1] * b[1][1],
                ],
            ]
        };
        if hflip {
            m = mul([[-1, 0], [0, 1]], m);
        }
        if vflip {
            m = mul([[1, 0], [0, -1]], m);
        }
        for _ in 0..(rotation / 90) % 4 {
            m = mul([[0, -1], [1, 0]], m);
        }
        match m {
            [[0, -1], [1, 0]] => Orientation::Rotate90,
            [[-1, 0], [0, -1]] => Orientation::Rotate180,
            [[0, 1], [-1, 0]] => Orientation::Rotate270,
            [[-1, 0], [0, 1]] => Orientation::Horizontal,
            [[1, 0], [0, -1]] => Orientation::Vertical,
            [[0, 1], [1, 0]] => Orientation::Transpose,
            [[0, -1], [-1, 0]] => Orientation::OtherTranspose,
            _ => Orientation::Identity,
        }
    }

    /// Whether width and height trade places.
    pub fn swaps(self) -> bool {
        matches!(
            self,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Transpose
                | Orientation::OtherTranspose
        )
    }

    /// The nick of GstVideoOrientationMethod, which both `video-direction` (videoflip) and
    /// `orientation` (libcamerasrc) take.
    pub fn nick(self) -> &'static str {
        match self {
            Orientation::Identity => "identity",
            Orientation::Rotate90 => "90r",
            Orientation::Rotate180 => "180",
            Orientation::Rotate270 => "90l",
            Orientation::Horizontal => "horiz",
            Orientation::Vertical => "vert",
            Orientation::Transpose => "ul-lr",
            Orientation::OtherTranspose => "ur-ll",
        }
    }
}
