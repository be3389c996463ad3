//! A 5x7 bitmap font for the synthetic camera's overlay (digits and a few
//! marks), so a viewer can read the frame counter and capture time.

/// Rows of a glyph, 5 bits each, most significant bit on the left.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        _ => [0; 7],
    }
}

/// Draws `text` into a luma plane at (x, y), `scale` pixels per font pixel,
/// on a dark box so it stays readable over the moving scene. Returns the
/// box's width and height, for the caller to clear its colour.
pub fn draw(
    luma: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    scale: usize,
    text: &str,
) -> (usize, usize) {
    let cell = 6 * scale;
    let box_w = cell * text.chars().count() + scale;
    let box_h = 9 * scale;
    for yy in y..(y + box_h).min(height) {
        for xx in x..(x + box_w).min(width) {
            luma[yy * width + xx] = 16;
        }
    }
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let px = x + scale + i * cell + col * scale;
                let py = y + scale + r * scale;
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (xx, yy) = (px + dx, py + dy);
                        if xx < width && yy < height {
                            luma[yy * width + xx] = 235;
                        }
                    }
                }
            }
        }
    }
    (box_w, box_h)
}
