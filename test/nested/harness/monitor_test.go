package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// monStep is one exchange of a fake monitor: read a command line (if
// expect is set), then write the chunks one by one.
type monStep struct {
	expect string
	write  []string
}

// greeting is QEMU 7.2's monitor banner.
const greeting = "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "

// echo returns what QEMU's line editor prints while cmd is typed: the line
// redrawn after each character, then CR LF.
func echo(cmd string) string {
	var b strings.Builder
	for i := 1; i <= len(cmd); i++ {
		b.WriteString(cmd[:i] + "\x1b[K" + strings.Repeat("\x1b[D", i))
	}
	return strings.TrimSuffix(b.String(), strings.Repeat("\x1b[D", len(cmd))) + "\r\n"
}

// fakeMonitor plays script on conn, then closes it, at once if hangUp is
// set, else once the client closed its end; it sends a description of the
// first deviation from the script (or nil) on the returned channel.
func fakeMonitor(conn net.Conn, script []monStep, hangUp bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReader(conn)
		err := func() error {
			for _, s := range script {
				if s.expect != "" {
					line, err := r.ReadString('\n')
					if err != nil {
						return fmt.Errorf("fake monitor: reading %q: %v", s.expect, err)
					}
					if line != s.expect+"\n" {
						return fmt.Errorf("fake monitor: got line %q, want %q", line, s.expect)
					}
				}
				for _, w := range s.write {
					if _, err := io.WriteString(conn, w); err != nil {
						return fmt.Errorf("fake monitor: writing: %v", err)
					}
				}
			}
			return nil
		}()
		if !hangUp {
			_, _ = io.Copy(io.Discard, r) // until the client closes
		}
		conn.Close()
		done <- err
	}()
	return done
}

func TestMonitor(t *testing.T) {
	tests := []struct {
		name     string
		script   []monStep
		cmds     []string
		deadline time.Duration // 0: a generous one
		want     []string      // outputs of the commands that succeeded
		hangUp   bool          // the fake monitor closes the connection after its script
		wantErr  error         // errors.Is target of the error ending the exchange
		errText  string        // or a text that error must contain
	}{
		{
			name: "command output without echo and escapes",
			script: []monStep{
				{write: []string{greeting}},
				{expect: "info cpus", write: []string{echo("info cpus") + "* CPU #0: thread_id=11\r\n  CPU #1: thread_id=12 (halted)\r\n(qemu) "}},
			},
			cmds: []string{"info cpus"},
			want: []string{"* CPU #0: thread_id=11\n  CPU #1: thread_id=12 (halted)"},
		},
		{
			name: "command without output",
			script: []monStep{
				{write: []string{greeting}},
				{expect: "sendkey alt-sysrq-w", write: []string{echo("sendkey alt-sysrq-w") + "(qemu) "}},
			},
			cmds: []string{"sendkey alt-sysrq-w"},
			want: []string{""},
		},
		{
			name: "prompts and escapes split across writes",
			script: []monStep{
				{write: []string{"QEMU 7.2.22 monitor\r\n(qe", "mu", ") "}},
				{expect: "info cpus", write: []string{"info cpus\x1b", "[K\r\n* CPU #0\r", "\n(qemu", ") "}},
				{expect: "info status", write: []string{"info status\r\nVM status: running\r\n", "(", "qemu) "}},
			},
			cmds: []string{"info cpus", "info status"},
			want: []string{"* CPU #0", "VM status: running"},
		},
		{
			name: "prompt text inside a line is not a prompt",
			script: []monStep{
				{write: []string{greeting}},
				{expect: "help x", write: []string{"help x\r\nsee (qemu) help\r\n(qemu) "}},
			},
			cmds: []string{"help x"},
			want: []string{"see (qemu) help"},
		},
		{
			name: "monitor that does not echo",
			script: []monStep{
				{write: []string{"(qemu) "}},
				{expect: "info version", write: []string{"7.2.22\r\n(qemu) "}},
			},
			cmds: []string{"info version"},
			want: []string{"7.2.22"},
		},
		{
			name:     "silent monitor: greeting times out",
			cmds:     []string{"info cpus"},
			deadline: 20 * time.Millisecond,
			wantErr:  os.ErrDeadlineExceeded,
		},
		{
			name:     "greeting without a prompt times out",
			script:   []monStep{{write: []string{"QEMU 7.2.22 monitor\r\n(qem"}}},
			deadline: 20 * time.Millisecond,
			wantErr:  os.ErrDeadlineExceeded,
		},
		{
			name:     "command without a reply times out",
			script:   []monStep{{write: []string{greeting}}},
			cmds:     []string{"info registers -a"},
			deadline: 20 * time.Millisecond,
			wantErr:  os.ErrDeadlineExceeded,
		},
		{
			name: "monitor gone in the middle of a reply",
			script: []monStep{
				{write: []string{greeting}},
				{expect: "info cpus", write: []string{"info cpus\r\n* CPU"}},
			},
			cmds:    []string{"info cpus"},
			hangUp:  true,
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "two command lines in one",
			script:  []monStep{{write: []string{greeting}}},
			cmds:    []string{"info cpus\nquit"},
			errText: "more than one line",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			done := fakeMonitor(server, tt.script, tt.hangUp)
			defer func() {
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			d := tt.deadline
			if d == 0 {
				d = time.Minute
			}
			deadline := time.Now().Add(d)

			var got []string
			m, err := NewMonitor(client, deadline)
			for i := 0; err == nil && i < len(tt.cmds); i++ {
				var out string
				out, err = m.Command(tt.cmds[i], deadline)
				if err == nil {
					got = append(got, out)
				}
			}
			client.Close()
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v, want %v", err, tt.wantErr)
			case tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)):
				t.Errorf("error %v, want one mentioning %q", err, tt.errText)
			case tt.wantErr == nil && tt.errText == "" && err != nil:
				t.Errorf("error %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("outputs %q, want %q", got, tt.want)
			}
		})
	}
}

// regsDump is the start of QEMU 7.2's "info registers -a" for one CPU of
// a 64-bit Linux kernel (the vector registers left out).
const regsDump = `
CPU#%d
RAX=000000000001ad40 RBX=0000000000000000 RCX=0000000000000000 RDX=4000000000000000
RSI=0000000000000083 RDI=0000000000023014 RBP=ffffffff8dc1aa40 RSP=ffffffff8dc03e98
R8 =0000000000000000 R9 =000000003457cae2 R10=00000000fffffffb R11=0000000000000001
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000014790
RIP=ffffffff8cc592eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 0000000000000000 00000000 00000000
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
GDT=     fffffe0000001000 0000007f
CR0=80050033 CR2=00000000005bcaf0 CR3=000000001fefe000 CR4=00751ef0
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
`

// regsLine is CompactRegisters' line for one CPU of regsDump.
const regsLine = "CPU#%d RIP=ffffffff8cc592eb RSP=ffffffff8dc03e98 RBP=ffffffff8dc1aa40 RFL=00000246 CPL=0 II=0 HLT=1 CR2=00000000005bcaf0 CR3=000000001fefe000"

func TestCompactRegisters(t *testing.T) {
	dump := func(cpus int) string {
		var b strings.Builder
		for i := 0; i < cpus; i++ {
			fmt.Fprintf(&b, regsDump, i)
		}
		return b.String()
	}
	lines := func(cpus int) []string {
		var l []string
		for i := 0; i < cpus; i++ {
			l = append(l, fmt.Sprintf(regsLine, i))
		}
		return l
	}
	tests := []struct {
		name     string
		out      string
		maxLines int
		want     []string
	}{
		{name: "two CPUs", out: dump(2), maxLines: 40, want: lines(2)},
		{
			name: "32-bit dump without a CPU header",
			out: "EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\n" +
				"ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000\n" +
				"EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n" +
				"CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000\n",
			maxLines: 40,
			want:     []string{"CPU EIP=0000fff0 ESP=00000000 EBP=00000000 EFL=00000002 CPL=0 II=0 HLT=0 CR2=00000000 CR3=00000000"},
		},
		{
			name:     "more CPUs than lines",
			out:      dump(5),
			maxLines: 3,
			want:     append(lines(2), "(3 more lines left out)"),
		},
		{
			name:     "error message kept as is",
			out:      "\nunknown command: 'info registers'\n",
			maxLines: 40,
			want:     []string{"unknown command: 'info registers'"},
		},
		{name: "empty", out: "", maxLines: 40, want: nil},
		{name: "no lines allowed", out: dump(1), maxLines: 0, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CompactRegisters(tt.out, tt.maxLines)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("CompactRegisters = %q\nwant %q", got, tt.want)
			}
		})
	}
}
