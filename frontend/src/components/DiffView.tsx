// Side by side: each version's text with the lines the other side lacks highlighted.
export function lineDiff(a: string[], b: string[]): { left: [string, boolean][]; right: [string, boolean][] } {
  // Longest common subsequence of lines: what stays; the rest changed.
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const keepA = new Set<number>();
  const keepB = new Set<number>();
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      keepA.add(i++);
      keepB.add(j++);
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) i++;
    else j++;
  }
  return {
    left: a.map((line, k) => [line, !keepA.has(k)]),
    right: b.map((line, k) => [line, !keepB.has(k)]),
  };
}

export function DiffView({ left, right, leftTitle, rightTitle }: { left: string; right: string; leftTitle: string; rightTitle: string }) {
  const diff = lineDiff(left.split("\n"), right.split("\n"));
  return (
    <div className="diff" data-testid="diff">
      <div>
        <h3>{leftTitle}</h3>
        {diff.left.map(([line, changed], k) => (
          <div key={k} className={`diff-line ${changed ? "diff-del" : ""}`}>
            {changed ? "− " : "  "}
            {line}
          </div>
        ))}
      </div>
      <div>
        <h3>{rightTitle}</h3>
        {diff.right.map(([line, changed], k) => (
          <div key={k} className={`diff-line ${changed ? "diff-add" : ""}`}>
            {changed ? "+ " : "  "}
            {line}
          </div>
        ))}
      </div>
    </div>
  );
}
