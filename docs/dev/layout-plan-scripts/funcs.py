import ast, pathlib, sys
root = pathlib.Path(__file__).resolve().parents[3] / 'nli_tune'
th = int(sys.argv[1]) if len(sys.argv)>1 else 40
for p in sorted(root.glob('*.py')):
    t = ast.parse(p.read_text())
    for n in t.body:
        if isinstance(n,(ast.FunctionDef,ast.ClassDef,ast.AsyncFunctionDef)):
            L = n.end_lineno - n.lineno + 1
            if L>=th: print(f"{p.stem}.{n.name} {n.lineno}-{n.end_lineno} ({L})")
            if isinstance(n, ast.ClassDef):
                for m in n.body:
                    if isinstance(m,(ast.FunctionDef,ast.AsyncFunctionDef)):
                        L = m.end_lineno - m.lineno + 1
                        if L>=25: print(f"   {p.stem}.{n.name}.{m.name} {m.lineno}-{m.end_lineno} ({L})")
