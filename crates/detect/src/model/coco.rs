//! The 80 COCO class names, in the order of the outputs of YOLO models trained
//! on COCO (the default model among them).

/// Class names of the COCO detection set, indexed by `Detection::class`.
#[rustfmt::skip]
pub const COCO: [&str; 80] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
];

/// The COCO name of class `i`, or `"?"` past the end (a model with more
/// classes than COCO: the index is still in the detection).
pub fn class_name(i: u16) -> &'static str {
    COCO.get(usize::from(i)).copied().unwrap_or("?")
}

/// The class index of a COCO name, for filters written by name in config.
pub fn class_index(name: &str) -> Option<u16> {
    COCO.iter().position(|n| *n == name).map(|i| i as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices() {
        for (i, name) in
            [(0, "person"), (1, "bicycle"), (2, "car"), (7, "truck"), (16, "dog"), (17, "horse"), (79, "toothbrush")]
        {
            assert_eq!(class_name(i), name);
            assert_eq!(class_index(name), Some(i));
        }
        assert_eq!(class_name(80), "?");
        assert_eq!(class_index("unicorn"), None);
    }
}
