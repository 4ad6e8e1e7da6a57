import RefractCLIP
print("refract-bench")
