package wallet

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
)

// icons draws the app icons the manifest names (a QR finder pattern in
// white on the wallet's blue), so no binary image sits in the repository.
func icons() map[string][]byte {
	out := map[string][]byte{}
	for _, size := range []int{192, 512} {
		out[fmt.Sprintf("icon-%d.png", size)] = drawIcon(size)
	}
	return out
}

func drawIcon(size int) []byte {
	blue := color.RGBA{0x0b, 0x3d, 0x91, 0xff}
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	// The icon is a grid of 16 cells: a 7-cell finder pattern (dark ring,
	// light ring, dark 3×3 centre) in each of three corners, plus a few
	// data cells, all on a blue field with a half-cell margin.
	cell := float64(size) / 16
	light := func(x, y int) bool {
		cx, cy := (float64(x)+0.5)/cell-0.5, (float64(y)+0.5)/cell-0.5
		if cx < 0 || cy < 0 || cx >= 15 || cy >= 15 {
			return false
		}
		ix, iy := int(cx), int(cy)
		for _, o := range [][2]int{{0, 0}, {8, 0}, {0, 8}} {
			fx, fy := ix-o[0], iy-o[1]
			if fx >= 0 && fx < 7 && fy >= 0 && fy < 7 {
				ring := min(fx, fy, 6-fx, 6-fy)
				return ring != 1
			}
		}
		return (ix*7+iy*3)%5 == 0
	}
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			if light(x, y) {
				img.Set(x, y, color.White)
			} else {
				img.Set(x, y, blue)
			}
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}
