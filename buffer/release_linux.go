package buffer

import "syscall"

func madviseDontNeed(addr, n uintptr) {
	if addr != 0 && n > 0 {
		syscall.Syscall(syscall.SYS_MADVISE, addr, n, syscall.MADV_DONTNEED)
	}
}
