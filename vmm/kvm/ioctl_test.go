package kvm

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRetryEINTR(t *testing.T) {
	tests := []struct {
		name      string
		req       uint32
		errs      []error // returned by successive calls; nil after the list
		wantCalls int
		wantErr   error
	}{
		{"success at once", kvmCreateVM, nil, 1, nil},
		{"EINTR twice then success", kvmCreateVM, []error{unix.EINTR, unix.EINTR}, 3, nil},
		{"other errors are not retried", kvmCreateVM, []error{unix.EBADF}, 1, unix.EBADF},
		{"KVM_RUN's EINTR reaches the caller", kvmRun, []error{unix.EINTR}, 1, unix.EINTR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			_, err := retryEINTR(tt.req, func() (int, error) {
				calls++
				if calls <= len(tt.errs) {
					return -1, tt.errs[calls-1]
				}
				return 0, nil
			})
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if !errors.Is(err, tt.wantErr) && !(err == nil && tt.wantErr == nil) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
}
