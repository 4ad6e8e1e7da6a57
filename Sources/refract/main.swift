import RefractCLIP
print("refract")
